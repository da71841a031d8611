//! DeltaBox on the workload: a Python REPL sandbox that imported Django and holds at
//! least 60 MB; agent-like steps (edit a source file, create and delete files, grow the
//! heap) between checkpoints; restores to random checkpoints, each verified.

use crate::workload::Workload;
use crate::{ms, summarize, BenchError, Options, Result, Summary};
use deltabox_sandbox::{
    storefs, CreateOptions, ExecOptions, Manager, Paths, ShellKind, TemplateInfo,
};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// RSS of the REPL when the measurements start.
    pub repl_rss_bytes: u64,
    /// Back to back: an agent step, then a checkpoint.
    pub checkpoint_ms: Summary,
    /// Back to back: restores to checkpoints picked at random from the whole tree.
    pub restore_ms: Summary,
    /// An agent's rollback: step, checkpoint, a bad step, think for `think_ms`, then
    /// restore that checkpoint.
    pub rollback_ms: Summary,
    pub think_ms: u64,
    pub diff_ms: Summary,
    /// The first checkpoint's template right after it was taken ...
    pub template_after_checkpoint: Memory,
    /// ... and after the live REPL rewrote 10 MB of the heap it shares with it.
    pub template_after_dirty_10mb: Memory,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Memory {
    pub rss: u64,
    pub pss: u64,
    pub private: u64,
}

fn step_err(what: &str) -> impl Fn(String) -> BenchError + '_ {
    move |why| BenchError::Step {
        what: what.to_string(),
        why,
    }
}

/// Runs Python source in the sandbox; its stdout, or an error with its stderr.
fn py(m: &Manager, sb: &str, src: &str) -> Result<String> {
    let out = m.exec(sb, src, &ExecOptions::default())?;
    if out.exit_code != 0 {
        return Err(BenchError::Step {
            what: format!(
                "python in the sandbox: {}",
                src.lines().next().unwrap_or("")
            ),
            why: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Think time before a rollback. Agents wait seconds for their LLM between steps; 50 ms
/// is far below that and enough for init to prepare a spare copy when idle.
const THINK_MS: u64 = 50;

fn setup_code(wl: &Workload) -> String {
    format!(
        r#"
import array, os, random, sys
REPO = {repo:?}
sys.path[:0] = [REPO, {site:?}]
os.chdir(REPO)
import django
from django.conf import settings
settings.configure(INSTALLED_APPS=['django.contrib.contenttypes', 'django.contrib.auth'],
                   DATABASES={{'default': {{'ENGINE': 'django.db.backends.sqlite3', 'NAME': ':memory:'}}}})
django.setup()
import django.test, django.forms, django.template, django.db.models, django.utils.text
corpus = {{}}
for root, _, names in os.walk(os.path.join(REPO, 'django')):
    for n in names:
        if n.endswith('.py'):
            p = os.path.join(root, n)
            corpus[p] = open(p, encoding='utf-8', errors='replace').read()
scratch = bytearray(os.urandom(16 << 20))
def rss():
    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) * 1024
pad = []
while rss() < 64 << 20:
    pad.append(array.array('d', (random.random() for _ in range(1 << 16))))
"#,
        repo = wl.repo.display().to_string(),
        site = wl.site.display().to_string(),
    )
}

/// One agent-like step; the REPL then holds `len(corpus)` entries.
fn step_code(i: usize) -> String {
    format!(
        r#"
with open(os.path.join(REPO, 'django/utils/text.py'), 'a') as f:
    f.write('\n# agent edit {i}\n')
with open('/tmp/agent-{i}.txt', 'w') as f:
    f.write('x' * 10000)
if os.path.exists('/tmp/agent-{prev}.txt'):
    os.remove('/tmp/agent-{prev}.txt')
corpus['note-{i}'] = 'y' * 4096
"#,
        prev = i.wrapping_sub(1)
    )
}

fn memory(m: &Manager, sb: &str, ck: &str) -> Result<Memory> {
    let node = m
        .tree(sb)?
        .into_iter()
        .find(|n| n.id == ck)
        .and_then(|n| n.template)
        .ok_or_else(|| BenchError::Step {
            what: "template memory".into(),
            why: format!("checkpoint {ck} has no live template"),
        })?;
    let TemplateInfo { memory: c, .. } = node;
    Ok(Memory {
        rss: c.rss,
        pss: c.pss,
        private: c.private,
    })
}

pub fn measure(opts: &Options, wl: &Workload) -> Result<Figures> {
    let root = opts.dir.join("store");
    storefs::prepare(&root, storefs::DEFAULT_IMAGE_BYTES)?;
    let m = Arc::new(Manager::open(Paths {
        root,
        init_exe: opts.init_exe.clone(),
        hidden: vec![],
    })?);
    for old in m.list() {
        let _ = m.remove(&old.id);
    }
    let sb = m
        .create(CreateOptions {
            shell: ShellKind::Python,
            ..Default::default()
        })?
        .id;
    let r = run_on(opts, wl, &m, &sb);
    let _ = m.remove(&sb);
    let _ = m.gc();
    m.shutdown();
    r
}

fn run_on(opts: &Options, wl: &Workload, m: &Arc<Manager>, sb: &str) -> Result<Figures> {
    (opts.progress)("deltabox: starting a Python REPL that imports Django (>= 60 MB)");
    py(m, sb, &setup_code(wl))?;
    let repl_rss_bytes: u64 = py(m, sb, "rss()")?
        .parse()
        .map_err(|e| step_err("REPL rss")(format!("{e}")))?;
    let base_len: usize = py(m, sb, "len(corpus)")?
        .parse()
        .map_err(|e| step_err("corpus size")(format!("{e}")))?;

    // Template memory: right after a checkpoint, then after the live copy rewrites 10 MB.
    let first = m.checkpoint(sb, Some("bench-start".into()))?.id;
    let template_after_checkpoint = memory(m, sb, &first)?;
    py(
        m,
        sb,
        "for j in range(0, 10 << 20, 4096):\n    scratch[j] ^= 0xff",
    )?;
    let template_after_dirty_10mb = memory(m, sb, &first)?;

    (opts.progress)(&format!("deltabox: {} checkpoints", opts.reps));
    let mut cks = Vec::new();
    let mut ck_ms = Vec::new();
    for i in 0..opts.reps {
        py(m, sb, &step_code(i))?;
        let t = Instant::now();
        let ck = m.checkpoint(sb, None)?;
        ck_ms.push(ms(t));
        cks.push((ck.id, base_len + i + 1, i));
    }
    let mut diff_ms = Vec::new();
    for w in cks.windows(2) {
        let t = Instant::now();
        let d = m.diff(&w[0].0, &w[1].0, false)?;
        diff_ms.push(ms(t));
        if d.changes.is_empty() {
            return Err(step_err("diff")(format!(
                "no change between {} and {}",
                w[0].0, w[1].0
            )));
        }
    }
    (opts.progress)(&format!(
        "deltabox: {} restores to random checkpoints",
        opts.reps
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut restore_ms = Vec::new();
    for _ in 0..opts.reps {
        let (ck, want_len, i) = &cks[rng.gen_range(0..cks.len())];
        let t = Instant::now();
        m.restore(sb, ck, false)?;
        restore_ms.push(ms(t));
        // Untimed: the restore really is the checkpoint (heap and files).
        let got = py(
            m,
            sb,
            "print(len(corpus), open(os.path.join(REPO, 'django/utils/text.py')).read().rsplit('\\n', 2)[-2])",
        )?;
        let want = format!("{want_len} # agent edit {i}");
        if got != want {
            return Err(step_err("verify restore")(format!(
                "after restoring {ck}: got {got:?}, want {want:?}"
            )));
        }
    }
    (opts.progress)(&format!(
        "deltabox: {} rollbacks after {} ms of think time",
        opts.reps, THINK_MS
    ));
    let mut rollback_ms = Vec::new();
    for i in 0..opts.reps {
        let n = 100_000 + i;
        py(m, sb, &step_code(n))?;
        let ck = m.checkpoint(sb, None)?.id;
        py(m, sb, &step_code(n + 1))?;
        std::thread::sleep(std::time::Duration::from_millis(THINK_MS));
        let t = Instant::now();
        m.restore(sb, &ck, false)?;
        rollback_ms.push(ms(t));
        let got = py(
            m,
            sb,
            "open(os.path.join(REPO, 'django/utils/text.py')).read().rsplit('\\n', 2)[-2]",
        )?;
        if got != format!("'# agent edit {n}'") {
            return Err(step_err("verify rollback")(format!(
                "after rolling back to {ck}: {got}"
            )));
        }
    }
    let sum = |v: &[f64], what: &str| {
        summarize(v).ok_or_else(|| step_err(what)("no samples (reps must be >= 2)".into()))
    };
    Ok(Figures {
        repl_rss_bytes,
        checkpoint_ms: sum(&ck_ms, "checkpoint")?,
        restore_ms: sum(&restore_ms, "restore")?,
        rollback_ms: sum(&rollback_ms, "rollback")?,
        think_ms: THINK_MS,
        diff_ms: sum(&diff_ms, "diff")?,
        template_after_checkpoint,
        template_after_dirty_10mb,
    })
}
