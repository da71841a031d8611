//! Fork (issue 4): new sandboxes that start exactly at a checkpoint (files and shell),
//! each in its own namespaces, isolated from each other, the parent and the templates.

mod common;
use common::*;

const IMG: u64 = 4 << 30;

/// Everything that makes up the shell's state at the checkpoint, as text.
const STATE: &str =
    "declare -p x Y; declare -f f; pwd; cat /tmp/w/f; alias ll; echo $-; trap -p USR1; umask";

fn fork(d: &Daemon, ck: &str, n: usize) -> Vec<String> {
    let r = d.json(&["fork", ck, "-n", &n.to_string()]);
    assert_eq!(r["ms"].as_array().unwrap().len(), n, "{r}");
    assert!(r["ms_p50"].as_f64().unwrap() > 0.0, "{r}");
    r["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn sixteen_children_start_exactly_at_the_checkpoint_and_cannot_touch_each_other() {
    let d = Daemon::start(IMG);
    let sb = d.create();
    let (_, code) = d.sh(
        &sb,
        "x=41; export Y=7; f(){ echo fn; }; alias ll='ls -l'; trap 'echo usr1' USR1; umask 027; \
         mkdir -p /tmp/w; cd /tmp/w; echo data > f",
    );
    assert_eq!(code, 0);
    let want = d.sh(&sb, STATE).0;
    let ck = d.checkpoint(&sb);
    d.sh(&sb, "x=0; cd /; echo parent-later > /tmp/w/f");
    let kids = fork(&d, &ck, 16);
    assert_eq!(kids.len(), 16);
    // The parent runs something the children must not be able to see or stop.
    d.sh(&sb, "sleep 1000 & disown");
    for k in &kids {
        assert_eq!(d.sh(k, STATE).0, want, "child {k}");
        // Its own pid and uts namespaces: the shell is pid 2, the hostname its id.
        assert_eq!(d.sh(k, "echo $$; hostname").0, format!("2\n{k}\n"));
        let procs = d.sh(k, "ps -e -o comm= | sort | tr '\\n' ' '").0;
        assert!(!procs.contains("sleep"), "{procs}");
    }
    // Each child kills everything it can and writes over the shared path.
    for k in &kids {
        // (The shell itself is among the victims: the daemon starts a fresh one.)
        d.sh(k, "pkill -9 -f . ; kill -9 -1; echo alive");
        d.sh(k, &format!("echo {k} > /tmp/w/f"));
    }
    for k in &kids {
        assert_eq!(d.sh(k, "cat /tmp/w/f").0, format!("{k}\n"), "child {k}");
    }
    assert_eq!(d.sh(&sb, "cat /tmp/w/f").0, "parent-later\n");
    assert_eq!(
        d.sh(&sb, "pgrep -x sleep >/dev/null && echo running").0,
        "running\n"
    );
    // Nor can the parent reach into its children: no ptrace, no /proc/PID/mem, no taking
    // the uid that owns their user namespaces; its kill-everything misses them.
    d.sh(&sb, "pkill -x sleep; true"); // its own (the child's are out of its reach)
    d.sh(&kids[0], "sleep 1000 & disown");
    let probe = r#"for p in $(pgrep -x sleep); do python3 -c '
import ctypes, os, sys
l = ctypes.CDLL(None, use_errno=True); p = int(sys.argv[1])
print("ptrace", l.ptrace(16, p, 0, 0), ctypes.get_errno())
try: open(f"/proc/{p}/mem", "rb"); print("mem opened")
except OSError as e: print("mem", e.errno)
print("owner uid", l.setresuid(-1, 0xfffffffe, -1), ctypes.get_errno())
' $p; done"#;
    let out = d.sh(&sb, probe).0;
    assert_eq!(out.matches("ptrace -1 1").count(), 1, "{out}");
    assert!(
        !out.contains("mem opened") && out.contains("owner uid -1 1"),
        "{out}"
    );
    d.sh(&sb, "pkill -x sleep; true");
    d.sh(&sb, "pkill -9 -f . ; kill -9 -1; true");
    for k in &kids[..4] {
        assert_eq!(d.sh(k, "echo ok").0, "ok\n");
    }
    // The template is untouched: the checkpoint restores exactly, in the parent and
    // in a new child.
    d.json(&["restore", &sb, &ck]);
    assert_eq!(d.sh(&sb, STATE).0, want);
    let late = fork(&d, &ck, 1);
    assert_eq!(d.sh(&late[0], STATE).0, want);
    // Removing children releases them; the checkpoint stays restorable and forkable.
    for k in &kids {
        d.json(&["rm", k]);
    }
    let left = d.ids();
    assert_eq!(left.len(), 2, "{left:?}");
    d.json(&["restore", &sb, &ck]);
    assert_eq!(d.sh(&sb, STATE).0, want);
    assert_eq!(d.sh(&fork(&d, &ck, 1)[0], STATE).0, want);
}

#[test]
fn children_of_children_checkpoint_restore_and_fork_again() {
    let d = Daemon::start(IMG);
    let sb = d.create();
    d.sh(&sb, "gen=0; mkdir -p /srv/g; cd /srv/g; echo 0 > log");
    let mut ck = d.checkpoint(&sb);
    let mut expect_log = "0\n".to_string();
    for gen in 1..=4 {
        let kids = fork(&d, &ck, 2);
        for k in &kids {
            assert_eq!(
                d.sh(k, "echo $gen; cat log").0,
                format!("{}\n{expect_log}", gen - 1),
                "generation {gen}, {k}"
            );
        }
        let k = &kids[0];
        d.sh(k, &format!("gen={gen}; echo {gen} >> log"));
        let mine = d.checkpoint(k);
        // A child is a full sandbox: change, restore, change again.
        d.sh(k, "gen=x; rm log");
        d.json(&["restore", k, &mine]);
        expect_log.push_str(&format!("{gen}\n"));
        assert_eq!(
            d.sh(k, "echo $gen; cat log").0,
            format!("{gen}\n{expect_log}")
        );
        // The sibling went its own way.
        assert_eq!(d.sh(&kids[1], "cat log | wc -l").0.trim(), gen.to_string());
        ck = mine;
    }
}

#[test]
fn a_python_session_forks_with_its_heap() {
    let d = Daemon::start(IMG);
    let sb = d.json(&["create", "--shell", "python"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    d.sh(
        &sb,
        "import hashlib, random\nrandom.seed(7)\nheap = [random.random() for _ in range(2_000_000)]",
    );
    let digest = "hashlib.sha256(repr(heap).encode()).hexdigest(), random.random()";
    let ck = d.checkpoint(&sb);
    let want = d.sh(&sb, digest).0;
    d.sh(&sb, "heap.clear()");
    for k in fork(&d, &ck, 3) {
        assert_eq!(d.sh(&k, digest).0, want, "child {k}");
    }
}

#[test]
fn a_warm_pool_hands_out_children_that_start_at_the_checkpoint() {
    let mut d = Daemon::start(IMG);
    let sb = d.create();
    d.sh(&sb, "x=pool; mkdir -p /srv/p; cd /srv/p; echo v1 > f");
    let ck = d.checkpoint(&sb);
    let r = d.json(&["pool", &ck, "4"]);
    assert_eq!(r["size"], 4);
    eventually(
        "the pool to fill",
        std::time::Duration::from_secs(30),
        || d.json(&["pool", &ck, "4"])["ready"] == 4,
    );
    // Waiting children are not listed.
    assert_eq!(d.ids().len(), 1);
    // The parent moves on; pooled children still start at the checkpoint.
    d.sh(&sb, "x=later; echo v2 > f");
    let kids = fork(&d, &ck, 6);
    for k in &kids {
        assert_eq!(
            d.sh(k, "echo $x; pwd; cat f").0,
            "pool\n/srv/p\nv1\n",
            "{k}"
        );
    }
    assert_eq!(d.ids().len(), 7);
    // Emptying the pool removes what waits; a daemon restart drops pooled children
    // (their template died with it) and unties forks from their parent.
    d.json(&["pool", &ck, "2"]);
    d.crash();
    d.spawn();
    assert_eq!(d.ids().len(), 7);
    d.json(&["rm", &sb]);
    assert_eq!(d.ids().len(), 6);
}

#[test]
fn removing_a_sandbox_removes_the_sandboxes_forked_from_it() {
    let d = Daemon::start(IMG);
    let sb = d.create();
    let ck = d.checkpoint(&sb);
    let kids = fork(&d, &ck, 2);
    let grandkid = fork(&d, &d.checkpoint(&kids[0]), 1);
    let ls = d.json(&["ls"]);
    let from = |id: &str| {
        ls.as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["forked_from"].clone())
    };
    assert_eq!(from(&kids[1]), Some(serde_json::json!(sb)));
    assert_eq!(from(&grandkid[0]), Some(serde_json::json!(kids[0])));
    let other = d.create();
    d.json(&["rm", &sb]);
    let left: Vec<String> = d
        .json(&["ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        left,
        vec![other],
        "forks of {sb} ({kids:?}, {grandkid:?}) must go with it"
    );
}

#[test]
fn forking_a_checkpoint_without_its_template_says_what_to_do() {
    let mut d = Daemon::start(IMG);
    let sb = d.create();
    d.sh(&sb, "echo kept > /root/f");
    let ck = d.checkpoint(&sb);
    d.crash();
    d.spawn();
    let out = d.cmd(&["fork", &ck]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("no process template to fork") && err.contains("--files-only"),
        "{err}"
    );
    // The way it names: files back, a new checkpoint, fork that.
    d.json(&["restore", &sb, &ck, "--files-only"]);
    let again = d.checkpoint(&sb);
    let kid = fork(&d, &again, 1);
    assert_eq!(d.sh(&kid[0], "cat /root/f").0, "kept\n");
}
