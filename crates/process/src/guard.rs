//! The guard that keeps frozen templates out of the sandbox's reach.
//!
//! Templates live in the sandbox's pid namespace (they are forks of its processes), so
//! `kill -9 -1` or `pkill python` from inside would reach them. Three layers stop that:
//! * templates are non-dumpable and the sandbox lacks CAP_SYS_PTRACE: no ptrace,
//!   /proc/PID/mem or process_vm_writev on them;
//! * templates are ptrace-stopped by init: SIGSTOP/SIGCONT do not move them;
//! * every signal-sending syscall of the sandbox goes through a seccomp user
//!   notification to init ([`decide`]), which refuses those aimed at a template and
//!   carries out `kill(-1, sig)` itself, minus the templates.

use crate::error::{ProcessError, Result};
use std::os::fd::{FromRawFd, OwnedFd};

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const F_SETOWN: u64 = 8;
const F_SETOWN_EX: u64 = 15;
const FIOSETOWN: u64 = 0x8901;
const SIOCSPGRP: u64 = 0x8902;

/// The syscalls the guard looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sys {
    Kill,
    Tkill,
    Tgkill,
    RtSigqueueinfo,
    RtTgsigqueueinfo,
    PidfdSendSignal,
    Fcntl,
    Ioctl,
    /// setuid, setreuid, setresuid, setfsuid (32-bit ids).
    SetUid,
}

/// The uid that owns the user namespaces of forked sandboxes. Whoever runs as a user
/// namespace's owner, one level up, has every capability in it, so no sandbox process
/// may take this uid (a template does, for the clone, by a syscall its init injects:
/// injected calls bypass the guard).
pub const FORK_OWNER_UID: u32 = 0xFFFF_FFFE;

/// Syscall numbers of the watched calls, per ABI.
fn table(arch: u32) -> &'static [(u32, Sys)] {
    match arch {
        AUDIT_ARCH_X86_64 => &[
            (62, Sys::Kill),
            (200, Sys::Tkill),
            (234, Sys::Tgkill),
            (129, Sys::RtSigqueueinfo),
            (297, Sys::RtTgsigqueueinfo),
            (424, Sys::PidfdSendSignal),
            (72, Sys::Fcntl),
            (16, Sys::Ioctl),
            (105, Sys::SetUid),
            (113, Sys::SetUid),
            (117, Sys::SetUid),
            (122, Sys::SetUid),
        ],
        AUDIT_ARCH_I386 => &[
            (37, Sys::Kill),
            (238, Sys::Tkill),
            (270, Sys::Tgkill),
            (178, Sys::RtSigqueueinfo),
            (335, Sys::RtTgsigqueueinfo),
            (424, Sys::PidfdSendSignal),
            (55, Sys::Fcntl),
            (221, Sys::Fcntl),
            (54, Sys::Ioctl),
            (213, Sys::SetUid),
            (203, Sys::SetUid),
            (208, Sys::SetUid),
            (215, Sys::SetUid),
        ],
        _ => &[],
    }
}

pub fn sys_of(arch: u32, nr: i32) -> Option<Sys> {
    table(arch)
        .iter()
        .find(|(n, _)| *n as i32 == nr)
        .map(|(_, s)| *s)
}

// Classic BPF, assembled with symbolic jump targets.
#[derive(Clone, Copy)]
enum Ins {
    /// Load the 32-bit word at this offset of struct seccomp_data.
    Ld(u32),
    /// If acc == k, jump to label.
    Jeq(u32, u8),
    /// If acc >= k, jump to label.
    Jge(u32, u8),
    Ret(u32),
    Label(u8),
}

const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG1: u32 = 16 + 8; // low word of args[1] (little endian)

fn assemble(prog: &[Ins]) -> Vec<libc::sock_filter> {
    let mut at = std::collections::HashMap::new();
    let mut n = 0usize;
    for i in prog {
        match i {
            Ins::Label(l) => {
                at.insert(*l, n);
            }
            _ => n += 1,
        }
    }
    let mut out = Vec::new();
    for i in prog {
        let pos = out.len();
        let jump = |l: &u8| (at[l] - pos - 1) as u8;
        let f = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        };
        match i {
            Ins::Ld(off) => out.push(f(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, *off)),
            Ins::Jeq(k, l) => out.push(f(
                libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                jump(l),
                0,
                *k,
            )),
            Ins::Jge(k, l) => out.push(f(
                libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
                jump(l),
                0,
                *k,
            )),
            Ins::Ret(k) => out.push(f(libc::BPF_RET | libc::BPF_K, 0, 0, *k)),
            Ins::Label(_) => {}
        }
    }
    out
}

/// The filter: watched calls go to the supervisor, everything else runs.
pub fn filter() -> Vec<libc::sock_filter> {
    const NOTIFY: u8 = 1;
    const FCNTL: u8 = 2;
    const IOCTL: u8 = 3;
    const I386: u8 = 4;
    const X32: u8 = 5;
    let (allow, notify) = (libc::SECCOMP_RET_ALLOW, libc::SECCOMP_RET_USER_NOTIF);
    let mut p = vec![
        Ins::Ld(OFF_ARCH),
        Ins::Jeq(AUDIT_ARCH_I386, I386),
        Ins::Jeq(AUDIT_ARCH_X86_64, 0),
        Ins::Ret(allow), // no other ABI on x86-64 hardware
        Ins::Label(0),
        Ins::Ld(OFF_NR),
        Ins::Jge(0x4000_0000, X32),
    ];
    let block = |p: &mut Vec<Ins>, arch: u32| {
        for (nr, s) in table(arch) {
            let to = match s {
                Sys::Fcntl => FCNTL,
                Sys::Ioctl => IOCTL,
                _ => NOTIFY,
            };
            p.push(Ins::Jeq(*nr, to));
        }
        p.push(Ins::Ret(allow));
    };
    block(&mut p, AUDIT_ARCH_X86_64);
    p.push(Ins::Label(I386));
    p.push(Ins::Ld(OFF_NR));
    block(&mut p, AUDIT_ARCH_I386);
    p.extend([
        Ins::Label(FCNTL),
        Ins::Ld(OFF_ARG1),
        Ins::Jeq(F_SETOWN as u32, NOTIFY),
        Ins::Jeq(F_SETOWN_EX as u32, NOTIFY),
        Ins::Ret(allow),
        Ins::Label(IOCTL),
        Ins::Ld(OFF_ARG1),
        Ins::Jeq(FIOSETOWN as u32, NOTIFY),
        Ins::Jeq(SIOCSPGRP as u32, NOTIFY),
        Ins::Ret(allow),
        // x32 calls would carry the same numbers with bit 30 set: not offered.
        Ins::Label(X32),
        Ins::Ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        Ins::Label(NOTIFY),
        Ins::Ret(notify),
    ]);
    assemble(&p)
}

/// Installs the guard filter on the calling process (which must have no_new_privs set)
/// and returns the listener the supervisor reads. Called in a freshly forked child
/// before exec; it only makes syscalls.
pub fn install() -> Result<OwnedFd> {
    let prog = filter();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at `prog`, which outlives the call; the kernel copies it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return Err(ProcessError::Seccomp {
            op: "install filter",
            why: std::io::Error::last_os_error().to_string(),
        });
    }
    // SAFETY: the kernel just returned this new descriptor to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// What the supervisor answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the kernel run the call as made.
    Continue,
    /// Fail it with this errno.
    Deny(i32),
    /// The supervisor did the work; the call returns this.
    Emulated(i64),
}

/// What the supervisor needs to know about the sandbox.
pub trait World {
    fn is_template(&self, pid: i32) -> bool;
    /// Sends `sig` to every process but init, the templates and `except_tgid`; returns
    /// how many got it.
    fn signal_all(&self, sig: i32, except_tgid: i32) -> usize;
    /// Thread group of a thread.
    fn tgid(&self, tid: i32) -> i32;
    /// The pid a pidfd (or /proc/PID directory fd) of process `pid` refers to.
    fn pidfd_target(&self, pid: i32, fd: i32) -> Option<i32>;
    /// Reads an i32 from process `pid`'s memory.
    fn read_i32(&self, pid: i32, addr: u64) -> Option<i32>;
    /// The world as thread `tid` sees it, if not this one (a caller in a sandbox forked
    /// from this one numbers pids in its own pid namespace).
    fn seen_by(&self, _tid: i32) -> Option<Box<dyn World + '_>> {
        None
    }
}

/// Decides one watched call made by thread `tid`.
pub fn decide(sys: Sys, args: &[u64; 6], tid: i32, w: &dyn World) -> Verdict {
    let int = |i: usize| args[i] as i32;
    let deny = Verdict::Deny(libc::EPERM);
    let guarded = |pid: i32| pid != 0 && w.is_template(pid.abs());
    match sys {
        Sys::Kill => match int(0) {
            -1 => {
                let n = w.signal_all(int(1), w.tgid(tid));
                if n > 0 || int(1) == 0 {
                    Verdict::Emulated(0)
                } else {
                    Verdict::Deny(libc::ESRCH)
                }
            }
            p if guarded(p) => deny,
            _ => Verdict::Continue,
        },
        Sys::Tkill | Sys::RtSigqueueinfo if guarded(int(0)) => deny,
        Sys::Tgkill | Sys::RtTgsigqueueinfo if guarded(int(0)) || guarded(int(1)) => deny,
        Sys::PidfdSendSignal => match w.pidfd_target(tid, int(0)) {
            Some(p) if guarded(p) => deny,
            _ => Verdict::Continue,
        },
        Sys::SetUid if args[..3].iter().any(|a| *a as u32 == FORK_OWNER_UID) => deny,
        Sys::Fcntl if args[1] == F_SETOWN && guarded(int(2)) => deny,
        Sys::Fcntl if args[1] == F_SETOWN_EX => {
            // struct f_owner_ex { int type; pid_t pid; }
            match w.read_i32(tid, args[2] + 4) {
                Some(p) if guarded(p) => deny,
                _ => Verdict::Continue,
            }
        }
        Sys::Ioctl if args[1] == FIOSETOWN || args[1] == SIOCSPGRP => {
            match w.read_i32(tid, args[2]) {
                Some(p) if guarded(p) => deny,
                _ => Verdict::Continue,
            }
        }
        _ => Verdict::Continue,
    }
}

/// Receives one notification from `listener`, decides it and answers. A notification
/// whose caller died meanwhile is not an error.
pub fn serve_one(listener: &OwnedFd, w: &dyn World) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: seccomp_notif is plain data; the kernel requires it zeroed before RECV.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: RECV fills `req`, which is a valid, writable seccomp_notif.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV,
            &mut req,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) || e.raw_os_error() == Some(libc::EINTR) {
            return Ok(());
        }
        return Err(ProcessError::Seccomp {
            op: "receive notification",
            why: e.to_string(),
        });
    }
    let verdict = match sys_of(req.data.arch, req.data.nr) {
        Some(sys) => {
            let tid = req.pid as i32;
            match w.seen_by(tid) {
                Some(view) => decide(sys, &req.data.args, tid, view.as_ref()),
                None => decide(sys, &req.data.args, tid, w),
            }
        }
        None => Verdict::Continue,
    };
    // SAFETY: as above, plain data.
    let mut resp: libc::seccomp_notif_resp = unsafe { std::mem::zeroed() };
    resp.id = req.id;
    match verdict {
        Verdict::Continue => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        Verdict::Deny(errno) => resp.error = -errno,
        Verdict::Emulated(v) => resp.val = v,
    }
    // SAFETY: SEND reads `resp`, a valid seccomp_notif_resp.
    let rc = unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(ProcessError::Seccomp {
                op: "answer notification",
                why: e.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    struct Fake {
        templates: Vec<i32>,
        signalled: RefCell<Vec<(i32, i32)>>,
        procs: Vec<i32>,
    }

    impl World for Fake {
        fn is_template(&self, pid: i32) -> bool {
            self.templates.contains(&pid)
        }
        fn signal_all(&self, sig: i32, except: i32) -> usize {
            let mut n = 0;
            for p in &self.procs {
                if *p != 1 && *p != except && !self.is_template(*p) {
                    self.signalled.borrow_mut().push((*p, sig));
                    n += 1;
                }
            }
            n
        }
        fn tgid(&self, tid: i32) -> i32 {
            tid
        }
        fn pidfd_target(&self, _pid: i32, fd: i32) -> Option<i32> {
            Some(fd + 100)
        }
        fn read_i32(&self, _pid: i32, addr: u64) -> Option<i32> {
            Some(addr as i32)
        }
    }

    fn world() -> Fake {
        Fake {
            templates: vec![20, 21],
            signalled: RefCell::new(vec![]),
            procs: vec![1, 5, 20, 21, 30],
        }
    }

    fn a(v: &[i64]) -> [u64; 6] {
        let mut out = [0u64; 6];
        for (i, x) in v.iter().enumerate() {
            out[i] = *x as u64;
        }
        out
    }

    #[test]
    fn signals_to_templates_are_refused_others_pass() {
        let w = world();
        let eperm = Verdict::Deny(libc::EPERM);
        assert_eq!(decide(Sys::Kill, &a(&[20, 9]), 5, &w), eperm);
        assert_eq!(decide(Sys::Kill, &a(&[-21, 18]), 5, &w), eperm);
        assert_eq!(decide(Sys::Kill, &a(&[30, 9]), 5, &w), Verdict::Continue);
        assert_eq!(decide(Sys::Kill, &a(&[0, 9]), 5, &w), Verdict::Continue);
        assert_eq!(decide(Sys::Tkill, &a(&[21, 9]), 5, &w), eperm);
        assert_eq!(decide(Sys::Tgkill, &a(&[30, 20, 9]), 5, &w), eperm);
        assert_eq!(
            decide(Sys::RtTgsigqueueinfo, &a(&[20, 20, 9]), 5, &w),
            eperm
        );
        assert_eq!(decide(Sys::PidfdSendSignal, &a(&[-80, 9]), 5, &w), eperm);
        assert_eq!(
            decide(Sys::PidfdSendSignal, &a(&[-70, 9]), 5, &w),
            Verdict::Continue
        );
        assert_eq!(decide(Sys::Fcntl, &a(&[3, 8, -20]), 5, &w), eperm);
        assert_eq!(decide(Sys::Fcntl, &a(&[3, 15, 16]), 5, &w), eperm); // reads addr+4 = 20
        assert_eq!(
            decide(Sys::Fcntl, &a(&[3, 1, 20]), 5, &w),
            Verdict::Continue
        );
        assert_eq!(decide(Sys::Ioctl, &a(&[3, 0x8902, 21]), 5, &w), eperm);
    }

    #[test]
    fn no_sandbox_process_may_take_the_fork_owner_uid() {
        let w = world();
        let owner = FORK_OWNER_UID as i64;
        let eperm = Verdict::Deny(libc::EPERM);
        assert_eq!(decide(Sys::SetUid, &a(&[owner]), 5, &w), eperm);
        assert_eq!(decide(Sys::SetUid, &a(&[-1, owner, -1]), 5, &w), eperm);
        assert_eq!(
            decide(Sys::SetUid, &a(&[1000, 1000, 1000]), 5, &w),
            Verdict::Continue
        );
        assert_eq!(sys_of(AUDIT_ARCH_X86_64, 117), Some(Sys::SetUid));
    }

    #[test]
    fn kill_minus_one_is_carried_out_without_the_templates() {
        let w = world();
        assert_eq!(decide(Sys::Kill, &a(&[-1, 9]), 5, &w), Verdict::Emulated(0));
        assert_eq!(*w.signalled.borrow(), vec![(30, 9)]);
        let lonely = Fake {
            procs: vec![1, 5, 20],
            ..world()
        };
        assert_eq!(
            decide(Sys::Kill, &a(&[-1, 9]), 5, &lonely),
            Verdict::Deny(libc::ESRCH)
        );
    }

    #[test]
    fn filter_assembles_with_forward_jumps_only() {
        let f = filter();
        assert!(f.len() < 64);
        let ret_notify = f.len() - 1;
        assert_eq!(f[ret_notify].k, libc::SECCOMP_RET_USER_NOTIF);
        for (i, ins) in f.iter().enumerate() {
            if ins.code as u32 & 0x07 == libc::BPF_JMP {
                assert!(i + 1 + (ins.jt as usize) < f.len());
            }
        }
        assert_eq!(sys_of(AUDIT_ARCH_X86_64, 62), Some(Sys::Kill));
        assert_eq!(sys_of(AUDIT_ARCH_I386, 37), Some(Sys::Kill));
        assert_eq!(sys_of(AUDIT_ARCH_X86_64, 0), None);
    }
}
