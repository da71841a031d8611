//! Real process_madvise: a process's own memory is collapsed into huge pages with the
//! same bytes; memory it shares with a template is left alone until it is its own.

mod common;

use common::root_mount_id;
use deltabox_process::hugepages::{aligned_ranges, collapse, supported, Collapsed};
use deltabox_process::{checkpoint, memory, Context};
use nix::unistd::Pid;
use std::time::Duration;

/// AnonHugePages of `pid` in bytes: its memory mapped by huge pages.
fn huge_bytes(pid: Pid) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let kb: u64 = rollup
        .lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kb << 10
}

fn collapse_all(pid: Pid) -> Collapsed {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    collapse(
        pid.as_raw(),
        &aligned_ranges(&maps),
        Duration::from_secs(30),
    )
    .unwrap()
}

const DIGEST: &str = "__import__('hashlib').sha256(big).hexdigest()";

#[test]
fn own_memory_becomes_huge_pages_and_shared_memory_waits() {
    if !supported() {
        eprintln!("SKIPPED: this kernel has no MADV_COLLAPSE through process_madvise (Linux 6.1+, THP built in)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut s, pipes) = common::spawn_repl(dir.path());
    let pid = Pid::from_raw(child.id() as i32);
    s.ask("big = bytearray(os.urandom(24 << 20))");
    let want = s.ask(DIGEST);
    assert_eq!(
        huge_bytes(pid),
        0,
        "not huge before (THP is madvise-only here)"
    );

    // Shared with a template: nothing is collapsed (it would cost a copy it keeps).
    let ctx = Context {
        root_mnt: root_mount_id(),
        session_pipes: &pipes,
    };
    let (tmpl, mv) = checkpoint(pid, &ctx).expect("checkpoint");
    mv.finish().unwrap();
    let private_before = memory::cost(tmpl.pid().as_raw()).unwrap().private;
    let done = collapse_all(pid);
    assert_eq!(done.collapsed, 0, "{done:?}");
    assert_eq!(huge_bytes(pid), 0);
    assert_eq!(
        memory::cost(tmpl.pid().as_raw()).unwrap().private,
        private_before,
        "the template's memory is untouched"
    );

    // Its own once the template is gone: 2 MiB ranges, same bytes.
    let tpid = tmpl.pid();
    tmpl.kill();
    nix::sys::wait::waitpid(tpid, None).unwrap(); // its memory is freed by then
    let done = collapse_all(pid);
    assert!(done.collapsed >= 8, "{done:?}");
    assert!(huge_bytes(pid) >= 16 << 20, "{}", huge_bytes(pid));
    assert_eq!(s.ask(DIGEST), want);
    s.ask("big[12345] ^= 0xff");
    assert_ne!(s.ask(DIGEST), want, "still the process's memory, writable");

    child.kill().unwrap();
    child.wait().unwrap();
}
