//! DeltaCR end to end: checkpoints hold the shell's process (bash or a Python REPL) as a
//! frozen template next to the files, restores bring both back byte for byte, templates
//! survive whatever the sandbox throws at them, and what cannot be captured exactly is
//! refused by name.

mod common;
use common::*;
use serde_json::Value;

const IMG: u64 = 4 << 30;
/// How long idle-time work (re-roots) may take to show.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(20);

/// Everything a bash session holds that a user can observe, minus what changes by itself
/// (RANDOM, SECONDS, `$_`, the running command's own bookkeeping).
const BASH_STATE: &str = r#"{ declare -p | grep -vE '^declare -[-a-zA-Z]* (BASH_[A-Z_]*|BASHPID|EPOCHREALTIME|EPOCHSECONDS|RANDOM|SRANDOM|SECONDS|LINENO|_|FUNCNAME|PIPESTATUS|COLUMNS|LINES)(=|$)'; declare -f; alias; echo "cwd=$PWD"; umask; set -o; shopt; trap -p; } 2>&1"#;

/// Files the tests change, hashed (so content and mode differences show).
const FILES_STATE: &str =
    "(cd /srv/w && find . -printf '%p %m %s\\n' | sort && find . -type f | sort | xargs -r sha256sum)";

fn python(d: &Daemon) -> String {
    d.json(&["create", "--shell", "python"])["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Runs Python source in a python sandbox; panics unless it succeeds.
fn py(d: &Daemon, sb: &str, src: &str) -> String {
    let v = d.json(&["exec", sb, "--", src]);
    assert_eq!(
        v["exit_code"].as_i64(),
        Some(0),
        "{src}: {}",
        v["stderr"].as_str().unwrap_or("")
    );
    v["stdout"].as_str().unwrap().to_string()
}

fn ok_sh(d: &Daemon, sb: &str, cmd: &str) -> String {
    let (out, code) = d.sh(sb, cmd);
    assert_eq!(code, 0, "{cmd}: {out}");
    out
}

fn tree(d: &Daemon, sb: &str) -> Vec<Value> {
    d.json(&["tree", sb]).as_array().unwrap().clone()
}

/// Pids (inside the sandbox) of the live templates of `sb`.
fn template_pids(d: &Daemon, sb: &str) -> Vec<i64> {
    tree(d, sb)
        .iter()
        .filter_map(|n| n["template"]["pid"].as_i64())
        .collect()
}

/// A checkpoint attempt that must fail with `code`; returns the message.
fn refused(d: &Daemon, sb: &str, code: &str) -> String {
    let before = tree(d, sb).len();
    let out = d.cmd(&["checkpoint", sb]);
    let err = stderr_of(&out);
    assert!(!out.status.success(), "checkpoint should fail: {err}");
    assert!(err.contains(&format!("[{code}]")), "{err}");
    assert_eq!(
        tree(d, sb).len(),
        before,
        "a refused checkpoint left a node"
    );
    err
}

#[test]
fn bash_session_is_restored_exactly() {
    let d = Daemon::start(IMG);
    let sb = d.create();
    ok_sh(
        &d,
        &sb,
        "mkdir -p /srv/w/sub && cd /tmp && cd /srv/w/sub && x=41; f(){ echo fn; }; export Y=7; \
         arr=(a 'b c' d); declare -A m=([k]=v [k2]='x y'); alias ll='ls -l'; umask 027; \
         shopt -s extglob; set -o noclobber; trap 'echo usr1' USR1; \
         echo one > /srv/w/a; printf 'bin\\0ary' > /srv/w/sub/b; chmod 600 /srv/w/a",
    );
    let s_a = ok_sh(&d, &sb, BASH_STATE);
    let f_a = ok_sh(&d, &sb, FILES_STATE);
    assert!(s_a.contains("declare -- x=\"41\"") && s_a.contains("cwd=/srv/w/sub"));
    let pid_a = ok_sh(&d, &sb, "echo $BASHPID");
    let a = d.checkpoint(&sb);
    // The live shell goes on after the checkpoint with everything intact.
    assert_eq!(ok_sh(&d, &sb, BASH_STATE), s_a);
    ok_sh(
        &d,
        &sb,
        "x=0; unset -f f; cd /; export Y=0; arr=(); unset m; unalias ll; umask 022; \
         shopt -u extglob; set +o noclobber; trap - USR1; echo two >| /srv/w/a; rm /srv/w/sub/b",
    );
    let s_b = ok_sh(&d, &sb, BASH_STATE);
    let f_b = ok_sh(&d, &sb, FILES_STATE);
    assert_ne!(s_a, s_b);
    let b = d.checkpoint(&sb);
    ok_sh(&d, &sb, "y=junk; cd /tmp; echo junk > /srv/w/junk");

    d.json(&["restore", &sb, &a]);
    // The issue's example, then the whole state byte for byte.
    assert_eq!(
        ok_sh(&d, &sb, "echo $x $Y; f; pwd"),
        "41 7\nfn\n/srv/w/sub\n"
    );
    assert_eq!(ok_sh(&d, &sb, BASH_STATE), s_a);
    assert_eq!(ok_sh(&d, &sb, FILES_STATE), f_a);
    // The old live shell is gone.
    let (_, alive) = d.sh(&sb, &format!("test -d /proc/{}", pid_a.trim()));
    assert_ne!(alive, 0, "the checkpointed live shell outlived the restore");

    // Any checkpoint, any order, many times: templates stay pristine.
    // Idle pauses let init prepare spare copies, so both paths run: a restore from a
    // fresh fork of the template and one from a spare.
    let order = [
        (&b, &s_b, &f_b),
        (&a, &s_a, &f_a),
        (&a, &s_a, &f_a),
        (&b, &s_b, &f_b),
    ];
    for (i, (ck, s, f)) in order.into_iter().enumerate() {
        if i % 2 == 1 {
            std::thread::sleep(std::time::Duration::from_millis(150));
        }
        d.json(&["restore", &sb, ck]);
        assert_eq!(&ok_sh(&d, &sb, BASH_STATE), s);
        assert_eq!(&ok_sh(&d, &sb, FILES_STATE), f);
        // Dirty the copy: the next restore of the same checkpoint must not see it.
        ok_sh(&d, &sb, "x=dirty; cd /; echo dirty > /srv/w/a2");
    }
    // Nothing left running but init and the shell: every other process is a frozen
    // template (or a spare copy of one), ptrace-stopped. Builtins only: no process is
    // started to look.
    assert_eq!(template_pids(&d, &sb).len(), 2);
    let procs = ok_sh(
        &d,
        &sb,
        "for p in /proc/[0-9]*; do read -r l < $p/stat; l=${l##*) }; echo \"${p#/proc/} ${l%% *}\"; done",
    );
    let running: Vec<&str> = procs
        .lines()
        .filter(|l| !l.ends_with(" t") && !l.starts_with("1 "))
        .collect();
    assert_eq!(running.len(), 1, "{procs}");
}

/// At least 50 MB of live objects of many kinds, an open file with an offset, a cwd,
/// the CPU affinity, and a digest of it all.
const HEAP: &str = r#"
import hashlib, os, pickle, random, sys
random.seed(7)
data = {i: (str(i) * 3, random.random(), [i, -i]) for i in range(150000)}
blob = bytearray(random.randbytes(48 << 20))
class Node:
    def __init__(self, v): self.v = v
nodes = [Node(i) for i in range(10000)]
os.makedirs('/srv/w', exist_ok=True)
os.chdir('/srv/w')
fh = open('log.txt', 'a+')
fh.write('first\n'); fh.flush()
def digest():
    h = hashlib.sha256()
    h.update(pickle.dumps(data)); h.update(blob)
    h.update(pickle.dumps([n.v for n in nodes]))
    h.update(repr(random.getstate()).encode())
    h.update(repr(sorted(sys.modules)).encode())
    h.update(repr([id(data), id(blob), id(nodes), id(nodes[-1]), id(Node)]).encode())
    h.update(repr((os.getcwd(), fh.tell(), sorted(os.sched_getaffinity(0)))).encode())
    return h.hexdigest()
def rss_mb():
    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) // 1024
"#;

#[test]
fn python_heap_is_restored_exactly() {
    let d = Daemon::start(IMG);
    let sb = python(&d);
    py(&d, &sb, HEAP);
    let rss: u64 = py(&d, &sb, "rss_mb()").trim().parse().unwrap();
    assert!(rss >= 50, "the REPL holds only {rss} MB");
    let d_a = py(&d, &sb, "digest()");
    let a = d.checkpoint(&sb);
    assert_eq!(
        py(&d, &sb, "digest()"),
        d_a,
        "the live REPL changed at checkpoint"
    );
    py(
        &d,
        &sb,
        "import decimal, json\ndata.clear(); blob[:10] = b'x' * 10; nodes.pop(); random.random()\n\
         fh.write('second\\n'); fh.flush(); os.chdir('/tmp')",
    );
    let d_b = py(&d, &sb, "digest()");
    assert_ne!(d_a, d_b);
    let b = d.checkpoint(&sb);
    let t = tree(&d, &sb);
    let rss_a = t[0]["template"]["memory"]["rss"].as_u64().unwrap();
    assert!(rss_a >= 50 << 20, "template rss {rss_a}");
    for (ck, want, log) in [
        (&a, &d_a, "first\n"),
        (&b, &d_b, "first\nsecond\n"),
        (&a, &d_a, "first\n"),
        (&a, &d_a, "first\n"),
        (&b, &d_b, "first\nsecond\n"),
    ] {
        d.json(&["restore", &sb, ck]);
        assert_eq!(&py(&d, &sb, "digest()"), want);
        // The reopened file is the checkpoint's: its content, and the offset writes go to.
        assert_eq!(
            py(&d, &sb, "print(open('/srv/w/log.txt').read(), end='')"),
            log
        );
        py(
            &d,
            &sb,
            "fh.write('after\\n'); fh.flush(); x = 'dirty'; data[0] = None",
        );
        assert_eq!(
            py(&d, &sb, "print(open('/srv/w/log.txt').read(), end='')"),
            format!("{log}after\n")
        );
    }
    // Errors are Python's, the session survives them.
    let v = d.json(&["exec", &sb, "--", "1/0"]);
    assert_eq!(v["exit_code"].as_i64(), Some(1));
    assert!(v["stderr"].as_str().unwrap().contains("ZeroDivisionError"));
    assert_eq!(py(&d, &sb, "len(nodes)"), "9999\n");
}

/// Private memory of the REPL itself, MB.
fn private_mb(d: &Daemon, sb: &str) -> u64 {
    let src = "print(sum(int(l.split()[1]) for l in open('/proc/self/smaps_rollup') if l.startswith('Private_')) // 1024)";
    py(d, sb, src).trim().parse().unwrap()
}

#[test]
fn rerooted_processes_restore_exactly() {
    // Eager: every idle moment gives the shell and the newest template fresh mappings
    // (copies at the same addresses, a new kernel ancestry), which must change nothing
    // a program can see.
    let d = Daemon::start_with_env(IMG, &[("DELTABOX_REROOT", "eager")]);
    let sb = python(&d);
    py(&d, &sb, HEAP);
    let want = py(&d, &sb, "digest()");
    let a = d.checkpoint(&sb);
    for _ in 0..3 {
        py(
            &d,
            &sb,
            "data.clear(); blob[:10] = b'y' * 10; random.random(); nodes.pop()",
        );
        d.json(&["restore", &sb, &a]);
        // A restored shell shares its pages with the template until re-rooted: then
        // it holds its own copy of the heap.
        eventually("the restored shell's re-root", SETTLE, || {
            private_mb(&d, &sb) >= 40
        });
        assert_eq!(py(&d, &sb, "digest()"), want);
        let b = d.checkpoint(&sb);
        py(&d, &sb, "blob[-1:] = b'z'; data[1] = 2");
        d.json(&["restore", &sb, &b]);
        assert_eq!(py(&d, &sb, "digest()"), want);
    }
    // Templates are re-rooted too: the newest, once its spare is made (eager mode forks
    // spares first), holds its own copy.
    let c = d.checkpoint(&sb);
    eventually("the newest template's re-root", SETTLE, || {
        tree(&d, &sb).iter().any(|n| {
            n["id"].as_str() == Some(c.as_str())
                && n["template"]["memory"]["private"].as_u64().unwrap_or(0) >= 40 << 20
        })
    });
    for ck in [&c, &a, &c] {
        py(&d, &sb, "data.clear(); blob[:10] = b'y' * 10");
        d.json(&["restore", &sb, ck]);
        assert_eq!(py(&d, &sb, "digest()"), want);
    }
    // A bash session too.
    let sh = d.create();
    ok_sh(
        &d,
        &sh,
        "x=41; f(){ echo fn; }; cd /tmp; export Y=7; alias ll='ls -l'; set -o noglob",
    );
    let state = ok_sh(&d, &sh, BASH_STATE);
    let c = d.checkpoint(&sh);
    for _ in 0..3 {
        ok_sh(
            &d,
            &sh,
            "x=0; unset -f f; cd /; export Y=0; unalias ll; set +o noglob",
        );
        d.json(&["restore", &sh, &c]);
        std::thread::sleep(std::time::Duration::from_millis(600));
        assert_eq!(ok_sh(&d, &sh, BASH_STATE), state);
    }
}

/// Tries to reach each pid in $TEMPLATES directly; prints only what succeeded.
const PROBE: &str = r#"python3 -c '
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for t in map(int, os.environ["TEMPLATES"].split()):
    for req in (16, 0x4206):  # PTRACE_ATTACH, PTRACE_SEIZE
        if libc.ptrace(req, t, 0, 0) == 0:
            print("ptrace", req, "attached", t)
    for mode in ("rb", "r+b"):
        try:
            open("/proc/%d/mem" % t, mode).close()
            print("opened mem", mode, t)
        except OSError:
            pass
    for send in (lambda: os.kill(t, 9), lambda: os.kill(t, 19), lambda: os.killpg(t, 18)):
        try:
            send()
            print("signalled", t)
        except OSError:
            pass
print("probed")
'"#;

/// Every ptrace-stopped process (templates and their spare copies).
const STOPPED_PIDS: &str = r#"for p in /proc/[0-9]*; do read -r l < $p/stat; l=${l##*) }; [ "${l%% *}" = t ] && printf '%s ' ${p#/proc/}; done"#;

/// Blunt attacks on everything, run one by one (some kill the shell that runs them).
const ATTACKS: &[&str] = &[
    "for p in /proc/[0-9]*; do p=${p#/proc/}; [ $p = $BASHPID ] && continue; kill -STOP $p; kill -CONT $p; kill -HUP $p; kill -9 $p; done 2>/dev/null; echo survived",
    "kill -CONT -1; kill -9 -1; echo survived",
    "pkill -9 python3; pkill -9 python; true",
    "pkill -9 bash",
];

#[test]
fn templates_are_untouchable_from_inside() {
    let d = Daemon::start(IMG);
    let sb = d.create();
    let pysb = python(&d);
    let mut bash_cks = Vec::new();
    for i in 0..3 {
        ok_sh(
            &d,
            &sb,
            &format!("mkdir -p /srv/w; cd /srv/w; v={i}; echo {i} > f{i}"),
        );
        bash_cks.push((
            d.checkpoint(&sb),
            ok_sh(&d, &sb, BASH_STATE),
            ok_sh(&d, &sb, FILES_STATE),
        ));
    }
    let mut py_cks = Vec::new();
    for i in 0..2 {
        py(
            &d,
            &pysb,
            &format!("import hashlib; v = {i}; big = bytes([{i}]) * (8 << 20)"),
        );
        let dig = py(
            &d,
            &pysb,
            "hashlib.sha256(big + str(v).encode()).hexdigest()",
        );
        py_cks.push((d.checkpoint(&pysb), dig));
    }
    let bash_t = template_pids(&d, &sb);
    let py_t = template_pids(&d, &pysb);
    assert_eq!((bash_t.len(), py_t.len()), (3, 2));

    let join = |v: &[i64]| {
        v.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    // Let init make spare copies too: they must be as untouchable as templates.
    std::thread::sleep(std::time::Duration::from_millis(150));
    for (box_, pids) in [(&sb, &bash_t), (&pysb, &py_t)] {
        let probe = format!(
            "export TEMPLATES=\"{} $({STOPPED_PIDS})\"; {PROBE}",
            join(pids)
        );
        let said = if box_ == &sb {
            ok_sh(&d, box_, &probe)
        } else {
            py(&d, box_, &format!("import subprocess\nprint(subprocess.run(['bash', '-c', {probe:?}], capture_output=True, text=True).stdout, end='')"))
        };
        assert_eq!(said, "probed\n", "a template was reachable");
        for attack in ATTACKS {
            if box_ == &sb {
                d.json(&["exec", box_, "--", attack]);
            } else {
                // From a subprocess of the REPL (which the attack may kill).
                d.json(&[
                    "exec",
                    box_,
                    "--",
                    &format!("import subprocess\nsubprocess.run(['bash', '-c', {attack:?}])"),
                ]);
            }
        }
    }
    assert_eq!(template_pids(&d, &sb), bash_t, "a bash template died");
    assert_eq!(template_pids(&d, &pysb), py_t, "a python template died");
    for (ck, state, files) in bash_cks.iter().rev().chain(bash_cks.iter()) {
        d.json(&["restore", &sb, ck]);
        assert_eq!(&ok_sh(&d, &sb, BASH_STATE), state);
        assert_eq!(&ok_sh(&d, &sb, FILES_STATE), files);
    }
    for (ck, dig) in py_cks.iter().rev().chain(py_cks.iter()) {
        d.json(&["restore", &pysb, ck]);
        assert_eq!(
            &py(
                &d,
                &pysb,
                "hashlib.sha256(big + str(v).encode()).hexdigest()"
            ),
            dig
        );
    }
}

#[test]
fn what_cannot_be_captured_is_refused_by_name() {
    let d = Daemon::start(IMG);
    let sb = d.create();
    ok_sh(&d, &sb, "mkdir -p /srv/w; echo base > /srv/w/f; v=base");
    let good = d.checkpoint(&sb);

    // A background process.
    ok_sh(&d, &sb, "sleep 1000 & echo $! > /tmp/bg");
    let bg = ok_sh(&d, &sb, "cat /tmp/bg");
    let err = refused(&d, &sb, "busy");
    assert!(
        err.contains(&format!("pid {}", bg.trim())) && err.contains("sleep"),
        "{err}"
    );
    ok_sh(&d, &sb, "kill $(cat /tmp/bg); wait");
    d.checkpoint(&sb);

    // A pipe the shell holds open.
    ok_sh(&d, &sb, "exec 7< <(exit 0); sleep 0.1");
    let err = refused(&d, &sb, "not_capturable");
    assert!(
        err.contains("fd 7 is a pipe") && err.contains("bash"),
        "{err}"
    );
    ok_sh(&d, &sb, "exec 7<&-");

    let pysb = python(&d);
    py(
        &d,
        &pysb,
        "import mmap, os, socket, threading, time\nos.makedirs('/srv/w', exist_ok=True)",
    );
    let pid = py(&d, &pysb, "os.getpid()").trim().to_string();
    // A second thread.
    py(
        &d,
        &pysb,
        "ev = threading.Event(); t = threading.Thread(target=ev.wait); t.start()",
    );
    let err = refused(&d, &pysb, "not_capturable");
    assert!(
        err.contains(&format!("pid {pid} (python3)")) && err.contains("2 threads"),
        "{err}"
    );
    py(&d, &pysb, "ev.set(); t.join()");
    // A writable shared mapping of a sandbox file.
    py(
        &d,
        &pysb,
        "f = open('/srv/w/m', 'w+b'); f.write(b'x' * 4096); f.flush(); mm = mmap.mmap(f.fileno(), 4096)",
    );
    let err = refused(&d, &pysb, "not_capturable");
    assert!(err.contains("writable shared mapping of /srv/w/m"), "{err}");
    py(&d, &pysb, "mm.close(); f.close()");
    // A socket.
    py(
        &d,
        &pysb,
        "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)",
    );
    let err = refused(&d, &pysb, "not_capturable");
    assert!(err.contains("socket"), "{err}");
    py(&d, &pysb, "s.close()");
    // Once the culprits are gone, checkpoints work again.
    d.checkpoint(&pysb);

    // None of the refusals touched the earlier checkpoint.
    ok_sh(&d, &sb, "v=changed; echo changed > /srv/w/f");
    d.json(&["restore", &sb, &good]);
    assert_eq!(ok_sh(&d, &sb, "echo $v; cat /srv/w/f"), "base\nbase\n");
}

#[test]
fn chain_of_200_checkpoints_restores_from_both_ends() {
    let d = Daemon::start(IMG);
    let sb = d.create();
    ok_sh(&d, &sb, "mkdir -p /srv/chain");
    let mut cks = Vec::new();
    for i in 1..=200 {
        ok_sh(&d, &sb, &format!("v={i}; echo {i} > /srv/chain/{i}"));
        cks.push(d.checkpoint(&sb));
    }
    let t = tree(&d, &sb);
    assert_eq!(t.len(), 200);
    assert!(
        t.iter().all(|n| n["template"]["pid"].is_i64()),
        "a template is missing"
    );
    for (ck, n) in [
        (&cks[199], 200),
        (&cks[0], 1),
        (&cks[199], 200),
        (&cks[99], 100),
    ] {
        d.json(&["restore", &sb, ck]);
        assert_eq!(
            ok_sh(&d, &sb, "echo $v; ls /srv/chain | wc -l; cat /srv/chain/$v"),
            format!("{n}\n{n}\n{n}\n")
        );
    }
    // Removing a checkpoint releases its template; the others stay restorable.
    d.json(&["rm", &cks[100]]);
    assert_eq!(template_pids(&d, &sb).len(), 199);
    d.json(&["restore", &sb, &cks[101]]);
    assert_eq!(ok_sh(&d, &sb, "echo $v"), "102\n");
}

/// Memory of the REPL mapped by huge pages, MB.
fn huge_mb(d: &Daemon, sb: &str) -> u64 {
    let src = "print(int(next(l for l in open('/proc/self/smaps_rollup') if l.startswith('AnonHugePages:')).split()[1]) // 1024)";
    py(d, sb, src).trim().parse().unwrap()
}

/// Whether `deltabox doctor` finds huge-page collapsing on this kernel.
fn huge_pages_supported(d: &Daemon) -> bool {
    let out = d.cmd(&["--json", "doctor"]);
    let checks: Value = serde_json::from_slice(&out.stdout).unwrap();
    let found = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "huge pages");
    found.unwrap()["status"] == "ok"
}

#[test]
fn repl_memory_in_huge_pages_restores_exactly() {
    let d = Daemon::start(IMG);
    if !huge_pages_supported(&d) {
        eprintln!(
            "SKIPPED: no MADV_COLLAPSE through process_madvise on this kernel (deltabox doctor)"
        );
        return;
    }
    let sb = python(&d);
    py(&d, &sb, HEAP);
    let want = py(&d, &sb, "digest()");
    // Init collapses what the REPL does not share (nothing yet) while it is quiet, or
    // at the latest before the first checkpoint forks it.
    eventually("the REPL's own memory in huge pages", SETTLE, || {
        huge_mb(&d, &sb) >= 32
    });
    assert_eq!(py(&d, &sb, "digest()"), want);
    let a = d.checkpoint(&sb);
    for _ in 0..2 {
        py(
            &d,
            &sb,
            "data.clear(); blob[:10] = b'y' * 10; blob[20 << 20] ^= 1; nodes.pop()",
        );
        d.json(&["restore", &sb, &a]);
        assert_eq!(py(&d, &sb, "digest()"), want);
    }
    // New memory after a restore is the shell's own again: collapsed by the next
    // checkpoint at the latest, so the template and its copies map it huge too.
    py(&d, &sb, "more = bytearray(os.urandom(24 << 20))");
    py(&d, &sb, HUGE_OF);
    let with_more = py(&d, &sb, "digest(), hashlib.sha256(more).hexdigest()");
    let b = d.checkpoint(&sb);
    py(&d, &sb, "more[:4] = b'zzzz'; blob.clear()");
    d.json(&["restore", &sb, &b]);
    assert_eq!(
        py(&d, &sb, "digest(), hashlib.sha256(more).hexdigest()"),
        with_more
    );
    let more_mb: u64 = py(&d, &sb, "huge_of(more)").trim().parse().unwrap();
    assert!(more_mb >= 16, "{more_mb} MB of `more` in huge pages");
}

/// `huge_of(buf)`: MB of huge pages in the mapping that holds `buf`.
const HUGE_OF: &str = r#"
import ctypes
def huge_of(buf):
    a = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
    inside = False
    for l in open('/proc/self/smaps'):
        f = l.split()
        if '-' in f[0] and not f[0].endswith(':'):
            lo, hi = (int(x, 16) for x in f[0].split('-'))
            inside = lo <= a < hi
        elif inside and f[0] == 'AnonHugePages:':
            print(int(f[1]) // 1024)
            return
"#;

#[test]
fn huge_pages_can_be_turned_off() {
    let d = Daemon::start_with_env(IMG, &[("DELTABOX_HUGEPAGES", "0")]);
    let sb = python(&d);
    py(&d, &sb, "import os; big = bytearray(os.urandom(24 << 20))");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    d.checkpoint(&sb);
    assert_eq!(huge_mb(&d, &sb), 0);
}
