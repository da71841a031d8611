//! DeltaBox on the workload: a Python REPL sandbox that imported Django and holds at
//! least 60 MB; agent-like steps between checkpoints (edit a source file, create and
//! delete files, grow the heap, every few steps run a slice of Django's tests or
//! pip-install a package); every restore is verified against the checkpoint.

use crate::workload::Workload;
use crate::{ms, BenchError, Options, Result, Series};
use deltabox_sandbox::{
    storefs, CreateOptions, ExecOptions, HugePages, Manager, Paths, Reroot, ShellKind, TemplateInfo,
};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// Think time before a rollback. Agents wait seconds for their LLM between steps; 50 ms
/// is far below that and enough for init to prepare a spare copy when idle.
pub const THINK_MS: u64 = 50;

/// The slice of Django's own test suite the steps and the data-path check run.
pub const TEST_SLICE: &str = "utils_tests";

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// RSS of the REPL when the measurements start.
    pub repl_rss_bytes: u64,
    /// Back to back: an agent step, then a checkpoint.
    pub checkpoint: Series,
    /// The same, on a second REPL (same setup, same steps, interleaved with the first)
    /// whose memory is never collapsed into huge pages: what they save.
    pub checkpoint_small_pages: Series,
    /// Back to back: restores to checkpoints picked at random from the whole tree.
    pub restore: Series,
    /// An agent's rollback: step, checkpoint, a bad step, think for `think_ms`, then
    /// restore that checkpoint.
    pub rollback: Series,
    pub think_ms: u64,
    pub diff: Series,
    /// Removing one checkpoint, then a GC pass.
    pub gc: Series,
    /// Restore of the files alone onto a fresh overlay mount, with a fresh REPL: the
    /// "overlayfs remount without process state" baseline (add `replay`).
    pub files_only_restore: Series,
    /// Bringing a fresh REPL back to the workload's state (import Django, rebuild the
    /// heap): what every baseline without process state pays on top of its restore.
    pub replay: Series,
    pub template_after_checkpoint: Memory,
    pub template_after_dirty_10mb: Memory,
    pub storage: Storage,
    pub data_path: DataPath,
    /// The operations of a replayed tree search, as DeltaBox ran them.
    pub search: SearchRun,
    pub fork: ForkFigures,
    pub lineage: LineageFigures,
}

/// A long lineage (issue 3's scaling problem): rounds of an agent step, a checkpoint,
/// a restore of that checkpoint and `think_ms` of think time, every checkpoint kept —
/// each round the shell is a fork of a template that is a fork of the shell before.
/// Measured with re-rooting (the default) and, on a second sandbox, without.
#[derive(Debug, Clone, Serialize)]
pub struct LineageFigures {
    pub rounds: usize,
    pub think_ms: u64,
    pub rerooted: LineageRun,
    pub not_rerooted: LineageRun,
}

#[derive(Debug, Clone, Serialize)]
pub struct LineageRun {
    /// The first and the last fifth of the rounds.
    pub first_checkpoint: Series,
    pub first_restore: Series,
    pub last_checkpoint: Series,
    pub last_restore: Series,
    /// Private memory of all the sandbox's templates at the end (what re-rooting costs:
    /// each re-root un-shares a copy).
    pub templates_private_bytes: u64,
}

/// Forking children from a checkpoint of the workload's REPL (issue 4).
#[derive(Debug, Clone, Serialize)]
pub struct ForkFigures {
    pub children: usize,
    /// Per child, forked on demand (template copy in new namespaces, its init, root).
    pub cold: Series,
    pub cold_total_ms: f64,
    /// Per child, handed out from a warm pool filled beforehand.
    pub warm: Series,
    pub warm_total_ms: f64,
    /// Filling that pool (in the background, in the daemon).
    pub pool_fill_ms: f64,
    /// Memory the host lost per child (MemAvailable before and after forking them all:
    /// page tables, the child's small processes, the pages its shell dirtied).
    pub added_bytes_per_child: u64,
    /// Children whose REPL state was checked against the checkpoint.
    pub verified: usize,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Memory {
    pub rss: u64,
    pub pss: u64,
    pub private: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Storage {
    pub checkpoints: usize,
    /// Bytes the steps wrote (appended, created): what changed.
    pub bytes_changed: u64,
    /// Bytes the layer store grew by for those checkpoints (copy-up copies whole files).
    pub bytes_used: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataPath {
    pub test_slice: String,
    pub sandbox: Series,
    pub host: Series,
    /// Median in the sandbox / median on the host (goal: <= 1.05).
    pub ratio: f64,
}

/// A replayed search: which operation came when, and what DeltaBox paid for each.
#[derive(Debug, Clone, Serialize)]
pub struct SearchRun {
    pub expansions: usize,
    pub rollbacks: usize,
    pub checkpoint_ms: Vec<f64>,
    pub rollback_ms: Vec<f64>,
}

/// Runs Python source in the sandbox; its stdout, or an error with its stderr.
fn py(m: &Manager, sb: &str, src: &str) -> Result<String> {
    let out = m.exec(sb, src, &ExecOptions::default())?;
    if out.exit_code != 0 {
        return Err(BenchError::step(
            format!(
                "python in the sandbox: {}",
                src.trim().lines().next().unwrap_or("")
            ),
            String::from_utf8_lossy(&out.stderr),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub(crate) fn setup_code(wl: &Workload) -> String {
    format!(
        r#"
import array, os, random, subprocess, sys, time
REPO = {repo:?}
VENV_PY = {vpy:?}
WHEELS = {wheels:?}
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
def run_tests():
    r = subprocess.run([VENV_PY, 'runtests.py', '--parallel', '1', '-v', '0', {slice:?}],
                       cwd=os.path.join(REPO, 'tests'), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
def pip(*args):
    r = subprocess.run([VENV_PY, '-m', 'pip', '-q', *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
"#,
        repo = wl.repo.display().to_string(),
        site = wl.site.display().to_string(),
        vpy = wl.python.display().to_string(),
        wheels = wl.wheels.display().to_string(),
        slice = TEST_SLICE,
    )
}

/// Bytes one step writes (an appended line and a created file).
const STEP_BYTES: u64 = 10_000 + 20;

/// One agent-like step (edit, create, delete, grow the heap).
fn step_code(i: usize) -> String {
    step_with(i, "")
}

/// The steps between the measured checkpoints: every 10th also runs Django's test
/// slice, and every 10th (offset by 5) pip-installs or uninstalls a package.
fn agent_step(i: usize) -> String {
    let extra = match i % 10 {
        0 => "run_tests()\n",
        5 if (i / 10).is_multiple_of(2) => {
            "pip('install', '--no-index', '--find-links', WHEELS, 'six')\n"
        }
        5 => "pip('uninstall', '-y', 'six')\n",
        _ => "",
    };
    step_with(i, extra)
}

fn step_with(i: usize, extra: &str) -> String {
    format!(
        r#"
with open(os.path.join(REPO, 'django/utils/text.py'), 'a') as f:
    f.write('\n# agent edit {i:>8}\n')
with open('/tmp/agent-{i}.txt', 'w') as f:
    f.write('x' * 10000)
if os.path.exists('/tmp/agent-{prev}.txt'):
    os.remove('/tmp/agent-{prev}.txt')
corpus['note-{i}'] = 'y' * 4096
{extra}"#,
        prev = i.wrapping_sub(1)
    )
}

/// The live REPL rewrites 10 MB of its heap (one byte per page of `scratch`).
const DIRTY_10MB: &str = "for j in range(0, 10 << 20, 4096):\n    scratch[j] ^= 0xff";

/// The last agent edit in the tree and the REPL's corpus size: what a restore must match.
const PROBE: &str =
    "print(len(corpus), open(os.path.join(REPO, 'django/utils/text.py')).read().rsplit('\\n', 2)[-2].split()[-1])";

fn memory(m: &Manager, sb: &str, ck: &str) -> Result<Memory> {
    let node = m
        .tree(sb)?
        .into_iter()
        .find(|n| n.id == ck)
        .and_then(|n| n.template)
        .ok_or_else(|| {
            BenchError::step(
                "template memory",
                format!("checkpoint {ck} has no live template"),
            )
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
    let _ = m.gc();
    let create = |huge_pages| {
        m.create(CreateOptions {
            shell: ShellKind::Python,
            huge_pages,
            ..Default::default()
        })
        .map(|s| s.id)
    };
    let sb = create(HugePages::Auto)?;
    let r = create(HugePages::Off)
        .map_err(BenchError::from)
        .and_then(|control| {
            let r = run_on(opts, wl, &m, &sb, &control);
            let _ = m.remove(&control);
            r
        });
    let _ = m.remove(&sb);
    let _ = m.gc();
    m.shutdown();
    r
}

fn series(v: Vec<f64>, what: &str) -> Result<Series> {
    Series::new(v).ok_or_else(|| BenchError::step(what, "no samples (reps must be >= 2)"))
}

/// The measurements on `sb`; `control` (huge pages off) goes through the same setup and
/// steps, interleaved, for the checkpoint comparison, and is removed after it.
fn run_on(
    opts: &Options,
    wl: &Workload,
    m: &Arc<Manager>,
    sb: &str,
    control: &str,
) -> Result<Figures> {
    (opts.progress)("deltabox: starting two Python REPLs that import Django (>= 60 MB), the second with huge pages off");
    let setup = setup_code(wl);
    py(m, sb, &setup)?;
    py(m, control, &setup)?;
    let repl_rss_bytes: u64 = py(m, sb, "rss()")?
        .parse()
        .map_err(|e| BenchError::step("REPL rss", e))?;
    let base_len: usize = py(m, sb, "len(corpus)")?
        .parse()
        .map_err(|e| BenchError::step("corpus size", e))?;

    // Template memory: right after a checkpoint, then after the live copy rewrites 10 MB.
    let first = m.checkpoint(sb, Some("bench-start".into()))?.id;
    let template_after_checkpoint = memory(m, sb, &first)?;
    py(m, sb, DIRTY_10MB)?;
    let template_after_dirty_10mb = memory(m, sb, &first)?;
    m.checkpoint(control, None)?;
    py(m, control, DIRTY_10MB)?;

    (opts.progress)(&format!(
        "deltabox: {} agent steps, each followed by a checkpoint (on both REPLs in turn)",
        opts.reps
    ));
    let used_before = m.usage().bytes;
    let mut cks = Vec::new();
    let (mut ck_ms, mut small_ms) = (Vec::new(), Vec::new());
    for i in 0..opts.reps {
        py(m, sb, &agent_step(i))?;
        let t = Instant::now();
        let ck = m.checkpoint(sb, None)?;
        ck_ms.push(ms(t));
        cks.push((ck.id, format!("{} {i}", base_len + i + 1)));
        py(m, control, &agent_step(i))?;
        let t = Instant::now();
        m.checkpoint(control, None)?;
        small_ms.push(ms(t));
    }
    let _ = m.remove(control);
    // Layers are written by then; squash may have merged some (which only saves space).
    let storage = Storage {
        checkpoints: opts.reps,
        bytes_changed: STEP_BYTES * opts.reps as u64,
        bytes_used: m.usage().bytes.saturating_sub(used_before),
    };
    let mut diff_ms = Vec::new();
    for w in cks.windows(2) {
        let t = Instant::now();
        let d = m.diff(&w[0].0, &w[1].0, false)?;
        diff_ms.push(ms(t));
        if d.changes.is_empty() {
            return Err(BenchError::step(
                "diff",
                format!("no change between {} and {}", w[0].0, w[1].0),
            ));
        }
    }
    (opts.progress)(&format!(
        "deltabox: {} restores to random checkpoints",
        opts.reps
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut restore_ms = Vec::new();
    for _ in 0..opts.reps {
        let (ck, want) = &cks[rng.gen_range(0..cks.len())];
        let t = Instant::now();
        m.restore(sb, ck, false)?;
        restore_ms.push(ms(t));
        let got = py(m, sb, PROBE)?;
        if &got != want {
            return Err(BenchError::step(
                "verify restore",
                format!("after restoring {ck}: got {got:?}, want {want:?}"),
            ));
        }
    }

    (opts.progress)(&format!(
        "deltabox: {} rollbacks after {THINK_MS} ms of think time",
        opts.reps
    ));
    let mut rollback_ms = Vec::new();
    for i in 0..opts.reps {
        let n = 100_000 + 2 * i;
        py(m, sb, &step_code(n))?;
        let ck = m.checkpoint(sb, None)?.id;
        let want = py(m, sb, PROBE)?;
        py(m, sb, &step_code(n + 1))?;
        std::thread::sleep(std::time::Duration::from_millis(THINK_MS));
        let t = Instant::now();
        m.restore(sb, &ck, false)?;
        rollback_ms.push(ms(t));
        let got = py(m, sb, PROBE)?;
        if got != want {
            return Err(BenchError::step(
                "verify rollback",
                format!("after rolling back to {ck}: {got} != {want}"),
            ));
        }
    }

    let search = replay_search(opts, m, sb, &cks)?;
    let fork = forks(opts, m, &cks[cks.len() - 1])?;
    let lineage = LineageFigures {
        rounds: opts.reps * 3 / 2,
        think_ms: THINK_MS,
        rerooted: lineage(opts, wl, m, Reroot::On)?,
        not_rerooted: lineage(opts, wl, m, Reroot::Off)?,
    };

    (opts.progress)("deltabox: files-only restores (overlay remount, fresh REPL) and REPL replays");
    let mut files_only = Vec::new();
    let mut replay = Vec::new();
    for k in 0..opts.baseline_reps.max(3) {
        let (ck, want) = &cks[(k * 7) % cks.len()];
        let t = Instant::now();
        m.restore(sb, ck, true)?;
        files_only.push(ms(t));
        let t = Instant::now();
        py(m, sb, &setup)?;
        replay.push(ms(t));
        let edit = py(m, sb, PROBE)?;
        if edit.split_whitespace().last() != want.split_whitespace().last() {
            return Err(BenchError::step(
                "verify files-only restore",
                format!("{edit} vs {want}"),
            ));
        }
    }

    (opts.progress)("deltabox: data path — Django's test slice in the sandbox and on the host");
    let data_path = data_path(opts, wl, m, sb)?;

    (opts.progress)(&format!(
        "deltabox: {} checkpoint removals + gc",
        opts.reps.min(cks.len())
    ));
    let mut gc_ms = Vec::new();
    for (ck, _) in cks.iter().take(opts.reps) {
        m.remove_checkpoint(ck)?;
        let t = Instant::now();
        m.gc()?;
        gc_ms.push(ms(t));
    }

    Ok(Figures {
        repl_rss_bytes,
        checkpoint: series(ck_ms, "checkpoint")?,
        checkpoint_small_pages: series(small_ms, "checkpoint, huge pages off")?,
        restore: series(restore_ms, "restore")?,
        rollback: series(rollback_ms, "rollback")?,
        think_ms: THINK_MS,
        diff: series(diff_ms, "diff")?,
        gc: series(gc_ms, "gc")?,
        files_only_restore: series(files_only, "files-only restore")?,
        replay: series(replay, "replay")?,
        template_after_checkpoint,
        template_after_dirty_10mb,
        storage,
        data_path,
        search,
        fork,
        lineage,
    })
}

/// One [`LineageFigures`] run, on a sandbox of its own.
fn lineage(opts: &Options, wl: &Workload, m: &Arc<Manager>, reroot: Reroot) -> Result<LineageRun> {
    let rounds = opts.reps * 3 / 2;
    (opts.progress)(&format!(
        "deltabox: a lineage of {rounds} checkpoint+restore rounds, re-rooting {:?}",
        reroot
    ));
    let sb = m
        .create(CreateOptions {
            shell: ShellKind::Python,
            reroot,
            ..Default::default()
        })?
        .id;
    let run = (|| {
        py(m, &sb, &setup_code(wl))?;
        let (mut ck_ms, mut restore_ms) = (Vec::new(), Vec::new());
        for i in 0..rounds {
            py(m, &sb, &step_code(200_000 + i))?;
            let t = Instant::now();
            let ck = m.checkpoint(&sb, None)?.id;
            ck_ms.push(ms(t));
            let want = py(m, &sb, PROBE)?;
            py(m, &sb, &step_code(300_000 + i))?;
            let t = Instant::now();
            m.restore(&sb, &ck, false)?;
            restore_ms.push(ms(t));
            let got = py(m, &sb, PROBE)?;
            if got != want {
                return Err(BenchError::step(
                    "verify lineage restore",
                    format!("round {i}: {got} != {want}"),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(THINK_MS));
        }
        let fifth = (rounds / 5).max(2);
        let part = |v: &[f64], last: bool, what: &str| {
            let p = if last {
                &v[v.len() - fifth..]
            } else {
                &v[..fifth]
            };
            series(p.to_vec(), what)
        };
        let templates_private_bytes = m
            .tree(&sb)?
            .iter()
            .filter_map(|n| n.template.as_ref().map(|t| t.memory.private))
            .sum();
        Ok(LineageRun {
            first_checkpoint: part(&ck_ms, false, "lineage checkpoint")?,
            first_restore: part(&restore_ms, false, "lineage restore")?,
            last_checkpoint: part(&ck_ms, true, "lineage checkpoint")?,
            last_restore: part(&restore_ms, true, "lineage restore")?,
            templates_private_bytes,
        })
    })();
    let _ = m.remove(&sb);
    run
}

fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Forks children of checkpoint `ck` (whose REPL answers `want` to PROBE), cold and
/// then from a warm pool; checks every child's REPL.
fn forks(opts: &Options, m: &Arc<Manager>, (ck, want): &(String, String)) -> Result<ForkFigures> {
    let n = if opts.quick { 16 } else { 64 };
    (opts.progress)(&format!(
        "deltabox: fork {n} children of a checkpoint, cold, then from a warm pool"
    ));
    let verify = |ids: &[String]| -> Result<usize> {
        for id in ids {
            let got = py(m, id, PROBE)?;
            if &got != want {
                return Err(BenchError::step(
                    "verify fork",
                    format!("child {id}: {got} != {want}"),
                ));
            }
        }
        Ok(ids.len())
    };
    let before = mem_available();
    let t = Instant::now();
    let (ids, cold) = m.fork(ck, n, None)?;
    let cold_total_ms = ms(t);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let added = before.saturating_sub(mem_available()) / n as u64;
    let mut verified = verify(&ids)?;
    for id in &ids {
        m.remove(id)?;
    }
    let t = Instant::now();
    m.set_pool(ck, n)?;
    while m.refill_pools() {}
    let pool_fill_ms = ms(t);
    let t = Instant::now();
    let (ids, warm) = m.fork(ck, n, None)?;
    let warm_total_ms = ms(t);
    verified += verify(&ids)?;
    m.set_pool(ck, 0)?;
    for id in &ids {
        m.remove(id)?;
    }
    Ok(ForkFigures {
        children: n,
        cold: series(cold, "cold fork")?,
        cold_total_ms,
        warm: series(warm, "warm-pool fork")?,
        warm_total_ms,
        pool_fill_ms,
        added_bytes_per_child: added,
        verified,
    })
}

/// A best-first-like search replayed for real: each expansion continues from the
/// current node or, half the time, from a random earlier one (a rollback), runs an
/// agent step and checkpoints the result.
fn replay_search(
    opts: &Options,
    m: &Arc<Manager>,
    sb: &str,
    start: &[(String, String)],
) -> Result<SearchRun> {
    let (want_expansions, want_rollbacks) = (100, 40);
    (opts.progress)(&format!(
        "deltabox: replaying a tree search (>= {want_expansions} expansions, >= {want_rollbacks} rollbacks)"
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut nodes: Vec<String> = start.iter().take(1).map(|(c, _)| c.clone()).collect();
    let mut current = nodes[0].clone();
    m.restore(sb, &current, false)?;
    let mut run = SearchRun {
        expansions: 0,
        rollbacks: 0,
        checkpoint_ms: Vec::new(),
        rollback_ms: Vec::new(),
    };
    while run.expansions < want_expansions || run.rollbacks < want_rollbacks {
        if rng.gen_bool(0.5) {
            let pick = nodes[rng.gen_range(0..nodes.len())].clone();
            if pick != current {
                let t = Instant::now();
                m.restore(sb, &pick, false)?;
                run.rollback_ms.push(ms(t));
                run.rollbacks += 1;
            }
        }
        py(m, sb, &step_code(200_000 + run.expansions))?;
        let t = Instant::now();
        current = m.checkpoint(sb, None)?.id;
        run.checkpoint_ms.push(ms(t));
        nodes.push(current.clone());
        run.expansions += 1;
    }
    Ok(run)
}

fn data_path(opts: &Options, wl: &Workload, m: &Arc<Manager>, sb: &str) -> Result<DataPath> {
    let reps = if opts.quick { 3 } else { 10 };
    let (mut inside, mut host) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        py(m, sb, "run_tests()")?;
        inside.push(ms(t));
        let t = Instant::now();
        let st = std::process::Command::new(&wl.python)
            .args(["runtests.py", "--parallel", "1", "-v", "0", TEST_SLICE])
            .current_dir(wl.repo.join("tests"))
            .output()
            .map_err(|e| BenchError::step("host test slice", e.to_string()))?;
        host.push(ms(t));
        if !st.status.success() {
            return Err(BenchError::step(
                "host test slice",
                String::from_utf8_lossy(&st.stderr).into_owned(),
            ));
        }
    }
    let (sandbox, host) = (series(inside, "data path")?, series(host, "data path")?);
    Ok(DataPath {
        test_slice: TEST_SLICE.into(),
        ratio: sandbox.median() / host.median(),
        sandbox,
        host,
    })
}
