//! Real ptrace: re-rooting a template gives it a fresh copy of its memory — the same
//! bytes at the same addresses — and copies of it still restore exactly.

mod common;

use common::root_mount_id;
use deltabox_process::reroot::{plan_for, reroot};
use deltabox_process::{checkpoint, memory, Context};
use nix::unistd::Pid;
use std::time::Duration;

/// Every readable mapping of `pid`: its maps line and its bytes.
fn snapshot(pid: Pid) -> Vec<(String, Vec<u8>)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|p| p.starts_with('r'))
        })
        .filter(|l| !l.ends_with("[vvar]") && !l.ends_with("[vsyscall]"))
        .map(|l| {
            let (a, b) = l
                .split_whitespace()
                .next()
                .unwrap()
                .split_once('-')
                .unwrap();
            let (a, b) = (
                u64::from_str_radix(a, 16).unwrap(),
                u64::from_str_radix(b, 16).unwrap(),
            );
            (l.to_string(), read_pages(pid, a, b))
        })
        .collect()
}

/// The bytes of [a, b); pages that cannot be read (a file mapping past the end of its
/// file) as a marker. Through /proc/PID/mem: process_vm_readv would pin the pages,
/// which un-shares them from the live process.
fn read_pages(pid: Pid, a: u64, b: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let read = |at: u64, len: u64| {
        let mut v = vec![0u8; len as usize];
        mem.read_exact_at(&mut v, at).map(|_| v)
    };
    if let Ok(v) = read(a, b - a) {
        return v;
    }
    (a..b)
        .step_by(4096)
        .flat_map(|p| read(p, 4096).unwrap_or_else(|_| b"unreadable".to_vec()))
        .collect()
}

/// Where the kernel keeps the process's rseq area (we are its tracer).
fn rseq_area(pid: Pid) -> u64 {
    let mut conf = [0u64; 4];
    // SAFETY: PTRACE_GET_RSEQ_CONFIGURATION writes at most the 32 bytes given.
    let n = unsafe { libc::ptrace(0x420f, pid.as_raw(), 32usize, conf.as_mut_ptr()) };
    assert!(
        n > 0,
        "PTRACE_GET_RSEQ_CONFIGURATION: {}",
        std::io::Error::last_os_error()
    );
    conf[0]
}

#[test]
fn rerooted_template_has_the_same_memory_unshared_and_restores_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut s, pipes) = common::spawn_repl(dir.path());
    s.ask("import random, hashlib; random.seed(5)");
    s.ask("big = bytes(random.getrandbits(8) for _ in range(1 << 20)) * 24"); // 24 MiB
    s.ask("objs = {i: [str(i)] * (i % 7) for i in range(200000)}");
    s.ask("r = random.random()");
    let want = s.ask("hashlib.sha256(big + repr(sorted(objs.items())).encode()).hexdigest(), r");
    let ctx = Context {
        root_mnt: root_mount_id(),
        session_pipes: &pipes,
    };
    let live = Pid::from_raw(child.id() as i32);
    let (mut tmpl, mv) = checkpoint(live, &ctx).expect("checkpoint");
    mv.finish().unwrap();
    // The kernel writes the cpu number into the rseq area whenever the process returns
    // to user space (an injected syscall does): not part of the comparison.
    let rseq = rseq_area(tmpl.pid());
    let before = snapshot(tmpl.pid());
    let private_before = memory::cost(tmpl.pid().as_raw()).unwrap().private;
    assert!(
        private_before < 8 << 20,
        "a fresh template shares its memory: {private_before}"
    );

    let regions = plan_for(tmpl.pid().as_raw()).unwrap();
    assert!(regions.iter().any(|r| r.file.is_some()), "{regions:?}");
    assert!(regions.iter().any(|r| r.file.is_none()), "{regions:?}");
    // In slices, as the sandbox's init does between requests.
    let (mut total, mut bytes) = (0, 0);
    let t0 = std::time::Instant::now();
    let mut rest = &regions[..];
    while !rest.is_empty() {
        let (n, done) = tmpl
            .with_tracee(|t| reroot(t, rest, Duration::from_millis(2)))
            .unwrap();
        assert_eq!(done.skipped, 0, "{done:?}");
        total += done.regions;
        bytes += done.bytes_copied;
        rest = &rest[n..];
    }
    assert_eq!(total, regions.len());
    // Reported, not asserted: speed is the benchmark's business.
    eprintln!(
        "re-rooted {} mappings ({} MB copied) in {:?}",
        regions.len(),
        bytes >> 20,
        t0.elapsed()
    );

    // Same mappings, same bytes, byte for byte.
    let after = snapshot(tmpl.pid());
    assert_eq!(before.len(), after.len());
    for ((l0, b0), (l1, b1)) in before.iter().zip(&after) {
        assert_eq!(l0, l1);
        let start = u64::from_str_radix(l0.split('-').next().unwrap(), 16).unwrap();
        let differ: Vec<u64> = (0..b0.len())
            .filter(|i| b0[*i] != b1[*i])
            .map(|i| start + i as u64)
            .filter(|a| !(rseq..rseq + 32).contains(a))
            .collect();
        assert!(differ.is_empty(), "contents of {l0} changed at {differ:x?}");
    }
    // No longer shared with the live process: the template holds its own copy now.
    let private_after = memory::cost(tmpl.pid().as_raw()).unwrap().private;
    assert!(
        private_after >= private_before + (24 << 20),
        "private {private_before} -> {private_after}"
    );
    // Nothing left to do: the fresh mappings have no pages of anyone else.
    assert_eq!(plan_for(tmpl.pid().as_raw()).unwrap().len(), regions.len());

    s.ask("big = None; objs = None; r = 0");
    child.kill().unwrap();
    child.wait().unwrap();
    for _ in 0..2 {
        let copy = tmpl.spawn().unwrap().finish().unwrap();
        assert_eq!(
            s.ask("hashlib.sha256(big + repr(sorted(objs.items())).encode()).hexdigest(), r"),
            want
        );
        assert_eq!(
            s.ask("random.random() == random.Random(5).random()"),
            "False"
        );
        s.ask("big = b''");
        nix::sys::signal::kill(copy, nix::sys::signal::Signal::SIGKILL).unwrap();
        nix::sys::wait::waitpid(copy, None).unwrap();
    }
    tmpl.kill();
}
