//! End-to-end: the `deltabox` binary against a real daemon (root, real namespaces and
//! overlayfs mounts).

mod common;
use common::*;
use std::time::{Duration, Instant};

const IMG: u64 = 4 << 30;

#[test]
fn shell_state_files_checkpoint_restore_diff_tree() {
    let d = Daemon::start(IMG);
    let sb = d.create();
    let (_, code) = d.sh(
        &sb,
        "mkdir -p /tmp/w && cd /tmp/w && echo hi > f && export X=1 && y=2",
    );
    assert_eq!(code, 0);
    let (out, _) = d.sh(&sb, "pwd; echo $X $y");
    assert_eq!(out, "/tmp/w\n1 2\n");
    let ck = d.json(&["checkpoint", &sb]);
    let a = ck["id"].as_str().unwrap().to_string();
    assert!(ck["ms"].as_f64().unwrap() > 0.0);
    d.sh(&sb, "rm f; echo bye > g");
    let b = d.checkpoint(&sb);
    // The shell survives the move onto the new mount, cwd included.
    assert_eq!(d.sh(&sb, "pwd; echo $X; ls").0, "/tmp/w\n1\ng\n");
    let r = d.json(&["restore", &sb, &a]);
    assert!(r["ms"].as_f64().unwrap() > 0.0);
    assert_eq!(d.sh(&sb, "ls /tmp/w; cat /tmp/w/f").0, "f\nhi\n");
    // Restore any node, any number of times, in any order.
    for target in [&b, &a, &b, &b, &a] {
        d.json(&["restore", &sb, target]);
        let want = if target == &a { "f\n" } else { "g\n" };
        assert_eq!(d.sh(&sb, "ls /tmp/w").0, want);
    }
    let diff = d.json(&["diff", &a, &b]);
    let changes: Vec<(String, String)> = diff["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().into(),
                c["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("deleted".into(), "/tmp/w/f".into()),
            ("added".into(), "/tmp/w/g".into())
        ]
    );
    let patch = d.cmd(&["diff", &a, &b, "--patch"]);
    let patch = String::from_utf8_lossy(&patch.stdout);
    assert!(
        patch.contains("--- a/tmp/w/f") && patch.contains("+bye"),
        "{patch}"
    );
    let tree = d.json(&["tree", &sb]);
    let nodes = tree.as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[1]["parent"].as_str(), Some(a.as_str()));
    let human = String::from_utf8_lossy(&d.cmd(&["tree", &sb]).stdout).into_owned();
    assert!(human.contains(&a) && human.contains(&b), "{human}");
    let ls = d.json(&["ls"]);
    assert_eq!(ls.as_array().unwrap().len(), 1);
    d.json(&["rm", &sb]);
    assert!(d.json(&["ls"]).as_array().unwrap().is_empty());
    let gc = d.json(&["gc"]);
    assert!(gc["layers_removed"].as_u64().unwrap() >= 2, "{gc}");
}

#[test]
fn sandbox_is_isolated_from_host() {
    let d = Daemon::start(IMG);
    let sb = d.create();
    let hosts = std::fs::read("/etc/hosts").unwrap();
    let marker = format!("/var/tmp/deltabox-host-marker-{}", std::process::id());
    std::fs::write(&marker, b"host").unwrap();
    let (_, code) = d.sh(
        &sb,
        &format!("echo evil > /etc/hosts && rm -f {marker} && touch /etc/deltabox-was-here"),
    );
    assert_eq!(code, 0);
    assert_eq!(
        std::fs::read("/etc/hosts").unwrap(),
        hosts,
        "host /etc/hosts was written through the sandbox"
    );
    assert!(
        exists(std::path::Path::new(&marker)),
        "host file deleted through the sandbox"
    );
    assert!(!exists(std::path::Path::new("/etc/deltabox-was-here")));
    std::fs::remove_file(&marker).unwrap();
    // Own namespaces: pid 1 is our init, own hostname, no network but loopback.
    let (out, _) = d.sh(&sb, "cat /proc/1/comm; hostname; ls /sys/class/net");
    assert_eq!(out, format!("deltabox\n{sb}\nlo\n"));
    // No mount, no ptrace, no module loading.
    let (_, code) = d.sh(&sb, "mount -t tmpfs x /mnt 2>/dev/null");
    assert_ne!(code, 0, "mount must fail inside the sandbox");
    let (out, _) = d.sh(&sb, "grep CapEff /proc/self/status");
    let caps = u64::from_str_radix(out.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(caps & (1 << 21), 0, "CAP_SYS_ADMIN must be dropped");
    assert_eq!(caps & (1 << 19), 0, "CAP_SYS_PTRACE must be dropped");
    // The layer store and the daemon's socket are not visible.
    let (out, _) = d.sh(
        &sb,
        &format!(
            "ls -A {} 2>&1; ls -A {} 2>&1",
            d.store.root.display(),
            d.socket.parent().unwrap().display()
        ),
    );
    assert!(!out.contains("layers") && !out.contains("d.sock"), "{out}");
    // Writes to /proc/sys and sysrq are refused.
    let (_, code) = d.sh(&sb, "echo 1 > /proc/sys/kernel/sysrq");
    assert_ne!(code, 0);
    // --net shares the host network.
    let sb2 = d.json(&["create", "--net"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (out, _) = d.sh(&sb2, "ls /sys/class/net | wc -l");
    let host_ifs = std::fs::read_dir("/sys/class/net").unwrap().count();
    assert_eq!(out.trim(), host_ifs.to_string());
}

#[test]
fn bad_input_gets_clear_errors_and_loses_nothing() {
    let d = Daemon::start(IMG);
    let sb = d.create();
    d.sh(&sb, "echo keep > /root/keep");
    let ck = d.checkpoint(&sb);
    // Unknown and malformed ids.
    let o = d.cmd(&["exec", "sb-0123456789ab", "--", "true"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr_of(&o).contains("no sandbox with id sb-0123456789ab"),
        "{}",
        stderr_of(&o)
    );
    let o = d.cmd(&["restore", &sb, "ck-../../etc"]);
    assert!(
        stderr_of(&o).contains("invalid checkpoint id"),
        "{}",
        stderr_of(&o)
    );
    let o = d.cmd(&["restore", &sb, "ck-0123456789ab"]);
    assert!(
        stderr_of(&o).contains("no checkpoint with id"),
        "{}",
        stderr_of(&o)
    );
    let o = d.cmd(&["rm", "bogus"]);
    assert!(!o.status.success() && stderr_of(&o).contains("neither a sandbox id"));
    // A removed checkpoint cannot be restored, and says so.
    d.sh(&sb, "echo 2 > /root/two");
    let ck2 = d.checkpoint(&sb);
    d.json(&["rm", &ck2]);
    let o = d.cmd(&["restore", &sb, &ck2]);
    assert!(stderr_of(&o).contains("was removed"), "{}", stderr_of(&o));
    // A command that never ends: killed at the timeout, shell state kept.
    d.sh(&sb, "cd /root; v=kept");
    let t = Instant::now();
    let v = d.json(&["exec", "--timeout", "0.5", &sb, "--", "sleep 1000"]);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(v["timed_out"], true);
    assert_eq!(v["exit_code"], 124);
    let v = d.json(&["exec", "--timeout", "0.5", &sb, "--", "while :; do :; done"]);
    assert_eq!(v["timed_out"], true);
    assert_eq!(d.sh(&sb, "echo $v; pwd").0, "kept\n/root\n");
    let o = d.cmd(&["exec", "--timeout", "0.3", &sb, "--", "sleep 5"]);
    assert_eq!(o.status.code(), Some(124));
    assert!(stderr_of(&o).contains("timed out"), "{}", stderr_of(&o));
    // Gigabytes of output: capped, counted, reported.
    let v = d.json(&[
        "exec",
        "--max-output",
        "1000000",
        &sb,
        "--",
        "head -c 2000000000 /dev/zero",
    ]);
    assert_eq!(v["truncated"], true);
    assert_eq!(v["stdout_bytes"], 2_000_000_000u64);
    assert_eq!(v["stdout"].as_str().unwrap().len(), 1_000_000);
    let o = d.cmd(&["exec", "--max-output", "10", &sb, "--", "seq 100000"]);
    assert!(stderr_of(&o).contains("output truncated"));
    // `exit` ends the shell; the next command gets a fresh one, and says so.
    let v = d.json(&["exec", &sb, "--", "exit 7"]);
    assert_eq!(v["exit_code"], 7);
    assert_eq!(v["shell_restarted"], true);
    assert_eq!(d.sh(&sb, "echo ok").0, "ok\n");
    // A background process blocks a files-only checkpoint with a specific error.
    d.sh(&sb, "sleep 1000 &");
    let o = d.cmd(&["checkpoint", &sb]);
    assert!(
        stderr_of(&o).contains("background process") && stderr_of(&o).contains("sleep"),
        "{}",
        stderr_of(&o)
    );
    d.sh(&sb, "kill %1; wait");
    // After all that, the first checkpoint is intact.
    d.json(&["restore", &sb, &ck]);
    assert_eq!(
        d.sh(&sb, "cat /root/keep; ls /root/two 2>&1 >/dev/null | wc -l")
            .0,
        "keep\n1\n"
    );
}

#[test]
fn sandbox_removed_mid_exec() {
    let d = Daemon::start(IMG);
    let sb = d.create();
    let ck = d.checkpoint(&sb);
    let sock = d.socket.clone();
    let root = d.store.root.clone();
    let sb2 = sb.clone();
    let h = std::thread::spawn(move || {
        std::process::Command::new(BIN)
            .args(["exec", &sb2, "--", "sleep 30"])
            .env("DELTABOX_SOCKET", sock)
            .env("DELTABOX_ROOT", root)
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    d.json(&["rm", &sb]);
    let o = h.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(!o.status.success());
    assert!(stderr_of(&o).contains("was removed"), "{}", stderr_of(&o));
    let o = d.cmd(&["restore", &sb, &ck]);
    assert!(stderr_of(&o).contains("was removed"), "{}", stderr_of(&o));
}

#[test]
fn daemon_crash_and_restart_keeps_every_checkpoint() {
    let mut d = Daemon::start(IMG);
    let sb = d.create();
    let mut cks = Vec::new();
    for i in 0..5 {
        d.sh(
            &sb,
            &format!("mkdir -p /srv/c && echo {i} > /srv/c/n && echo {i} >> /srv/c/log"),
        );
        cks.push(d.checkpoint(&sb));
    }
    d.sh(&sb, "echo live > /srv/c/live");
    d.crash();
    d.spawn();
    // The sandbox comes back with its live files (a fresh shell).
    assert_eq!(d.sh(&sb, "cat /srv/c/live").0, "live\n");
    // Process templates died with the daemon: a plain restore says so and changes
    // nothing; --files-only brings the files back with a fresh shell.
    d.sh(&sb, "z=still");
    let out = d.cmd(&["restore", &sb, &cks[0]]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("no process template") && err.contains("--files-only"),
        "{err}"
    );
    assert_eq!(d.sh(&sb, "echo $z; cat /srv/c/live").0, "still\nlive\n");
    for (i, ck) in cks.iter().enumerate().rev() {
        d.json(&["restore", &sb, ck, "--files-only"]);
        let log: String = (0..=i).map(|k| format!("{k}\n")).collect();
        assert_eq!(
            d.sh(&sb, "cat /srv/c/n /srv/c/log").0,
            format!("{i}\n{log}")
        );
    }
    let tree = d.json(&["tree", &sb]);
    assert_eq!(tree.as_array().unwrap().len(), 5);
}

#[test]
fn full_layer_store_fails_clearly_and_keeps_checkpoints() {
    // XFS needs ~300 MB; the sandbox fills the rest.
    let d = Daemon::start(320 << 20);
    let sb = d.create();
    d.sh(&sb, "echo precious > /root/p");
    let ck = d.checkpoint(&sb);
    let (out, code) = d.sh(
        &sb,
        "head -c 1000000000 /dev/zero > /root/big 2>&1; echo $?",
    );
    assert_ne!(
        out.trim(),
        "0",
        "writing past the store's size must fail inside the sandbox"
    );
    let _ = code;
    // Whatever the checkpoint does on a full store, it is either complete or refused
    // with a message that says the store is full.
    let o = d.cmd(&["--json", "checkpoint", &sb]);
    let full_ck = if o.status.success() {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        Some(v["id"].as_str().unwrap().to_string())
    } else {
        let e = stderr_of(&o);
        assert!(e.contains("full") || e.contains("No space"), "{e}");
        None
    };
    d.json(&["restore", &sb, &ck]);
    assert_eq!(
        d.sh(&sb, "cat /root/p; ls /root/big 2>/dev/null | wc -l").0,
        "precious\n0\n"
    );
    // Space comes back once nothing needs the big file: the discarded upper is deleted
    // in the background, a checkpoint holding it goes with `rm` + `gc`.
    if let Some(full) = full_ck {
        d.json(&["rm", &full]);
    }
    d.json(&["gc"]);
    eventually(
        "space freed by restore + gc",
        Duration::from_secs(10),
        || {
            d.sh(&sb, "head -c 50000000 /dev/zero > /root/after && echo ok")
                .0
                == "ok\n"
        },
    );
    d.checkpoint(&sb);
}

#[test]
fn openapi_spec_covers_every_route() {
    let spec: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.yaml"))
            .unwrap(),
    )
    .unwrap();
    let paths = spec["paths"].as_mapping().unwrap();
    let src = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../daemon/src/routes.rs"
    ))
    .unwrap();
    let mut n = 0;
    for line in src
        .lines()
        .filter(|l| l.trim_start().starts_with(".route(\""))
    {
        let route = line.split('"').nth(1).unwrap();
        let item = paths
            .get(serde_yaml::Value::from(route))
            .unwrap_or_else(|| panic!("openapi.yaml lacks {route}"));
        for (m, method) in [("get(", "get"), ("post(", "post"), ("delete(", "delete")] {
            if line.contains(m) {
                assert!(
                    item.get(method).is_some(),
                    "openapi.yaml lacks {method} {route}"
                );
            }
        }
        n += 1;
    }
    assert!(n >= 10);
}

/// Every sandbox process carries the seccomp guard; signals still work as in any shell,
/// and `kill -9 -1` (carried out by init on the guard's behalf) spares the caller.
#[test]
fn signals_pass_through_the_template_guard() {
    let d = Daemon::start(IMG);
    let sb = d.create();
    let (out, code) = d.sh(
        &sb,
        "grep -c . /dev/null; awk '/^Seccomp:/{print $2}' /proc/self/status; \
         sleep 100 & sleep 100 & kill -9 -1; wait; echo survived; \
         sleep 100 & p=$!; kill -TERM $p; wait $p; echo term=$?; \
         sleep 100 & p=$!; kill -0 -$p 2>/dev/null; kill -9 $p; wait $p; echo kill=$?",
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        ["0", "2", "survived", "term=143", "kill=137"],
        "{out}"
    );
    // The shell was the caller of kill -1: its state is intact.
    d.sh(&sb, "x=5");
    assert_eq!(d.sh(&sb, "echo $x").0, "5\n");
}

#[test]
fn leased_sandbox_goes_when_its_owner_dies_even_by_sigkill() {
    let mut d = Daemon::start(IMG);
    let mut owner = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let pid = owner.id().to_string();
    let leased = d.json(&["create", "--owner-pid", &pid]);
    assert_eq!(leased["owner_pid"].as_i64(), Some(owner.id() as i64));
    let leased = leased["id"].as_str().unwrap().to_string();
    let free = d.create();
    d.checkpoint(&leased);
    // A lease survives a daemon restart (it is in the sandbox's record).
    d.crash();
    d.spawn();
    let ids = |d: &Daemon| d.ids();
    assert!(ids(&d).contains(&leased) && ids(&d).contains(&free));
    owner.kill().unwrap();
    owner.wait().unwrap();
    eventually(
        "the leased sandbox to go with its owner",
        Duration::from_secs(15),
        || !ids(&d).contains(&leased),
    );
    assert_eq!(ids(&d), vec![free.clone()]);
    // A lease to a process that does not exist is refused, naming the pid.
    let out = d.cmd(&["create", "--owner-pid", &pid]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains(&format!("owner pid {pid}")),
        "{}",
        stderr_of(&out)
    );
}
