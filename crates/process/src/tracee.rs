//! A process held in a ptrace stop: syscalls injected into it, forks made of it.
//!
//! The tracer must be one thread for the tracee's whole traced life (ptrace binds the
//! tracee to the thread that attached). In DeltaBox that thread is the sandbox's init,
//! which is single-threaded and lives as long as the sandbox.

use crate::error::{ProcessError, Result};
use libc::user_regs_struct;
use nix::errno::Errno;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::sys::ptrace::{self, Options};
use nix::sys::signal::Signal;
use nix::sys::uio::{process_vm_readv, process_vm_writev, RemoteIoVec};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::{IoSlice, IoSliceMut};

const ERESTARTSYS: i64 = 512;
const ERESTARTNOINTR: i64 = 513;
const ERESTARTNOHAND: i64 = 514;
const ERESTART_RESTARTBLOCK: i64 = 516;
/// The `syscall` instruction (x86-64).
const SYSCALL_INSN: [u8; 2] = [0x0f, 0x05];

/// Registers to resume a process with so that the syscall it was interrupted in runs
/// again, exactly as the kernel's own signal-return path would arrange it.
///
/// A process stopped by PTRACE_INTERRUPT inside a blocking syscall holds `-ERESTART*`
/// in rax. The kernel rewinds it only on the signal path it was on when it stopped; a
/// process that then ran injected syscalls, or a fresh fork of it, never gets back there,
/// so the rewind is done here. `orig_rax = -1` keeps the kernel from rewinding twice.
pub fn resume_regs(mut r: user_regs_struct) -> user_regs_struct {
    if (r.orig_rax as i64) >= 0 {
        match -(r.rax as i64) {
            ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
                r.rax = r.orig_rax;
                r.rip -= 2;
            }
            ERESTART_RESTARTBLOCK => {
                r.rax = libc::SYS_restart_syscall as u64;
                r.rip -= 2;
            }
            _ => {}
        }
    }
    r.orig_rax = u64::MAX;
    r
}

/// The calling thread and a process pinned together on the CPU the thread is on, until
/// released: every ptrace round trip (a stop, an injected syscall, a batch) then
/// switches tasks on one CPU instead of waking the other side on another (three injected
/// syscalls took 350 us apart and 105 us together here). Both affinities are put back
/// on release (or drop): the process's is part of its state. Pinning is best effort; a
/// failure leaves both as they were.
pub struct OneCpu {
    mine: Option<CpuSet>,
    theirs: Option<(Pid, CpuSet)>,
}

impl OneCpu {
    pub fn pin(pid: Pid) -> OneCpu {
        let me = Pid::from_raw(0);
        let mut pin = OneCpu {
            mine: None,
            theirs: None,
        };
        let (Ok(mine), Ok(theirs)) = (sched_getaffinity(me), sched_getaffinity(pid)) else {
            return pin;
        };
        // SAFETY: sched_getcpu only reads the calling thread's CPU number.
        let cpu = unsafe { libc::sched_getcpu() };
        let mut one = CpuSet::new();
        if cpu < 0 || one.set(cpu as usize).is_err() || sched_setaffinity(me, &one).is_err() {
            return pin;
        }
        pin.mine = Some(mine);
        if sched_setaffinity(pid, &one).is_ok() {
            pin.theirs = Some((pid, theirs));
        }
        pin
    }

    /// The process's own affinity, which a fork made while pinned must be given.
    fn original(&self) -> Option<CpuSet> {
        self.theirs.map(|(_, set)| set)
    }

    /// Gives `pid` (a fork of the pinned process) the affinity the process had.
    pub fn unpin_fork(&self, pid: Pid) -> Result<()> {
        match self.original() {
            Some(set) => sched_setaffinity(pid, &set).map_err(|e| ProcessError::Tracee {
                pid: pid.as_raw(),
                what: format!("could not be given its parent's CPU affinity: {e}"),
            }),
            None => Ok(()),
        }
    }

    /// Puts both affinities back.
    pub fn release(mut self) -> Result<()> {
        self.restore()
    }

    fn restore(&mut self) -> Result<()> {
        if let Some(mine) = self.mine.take() {
            let _ = sched_setaffinity(Pid::from_raw(0), &mine);
        }
        match self.theirs.take() {
            Some((pid, set)) => sched_setaffinity(pid, &set).map_err(|e| ProcessError::Tracee {
                pid: pid.as_raw(),
                what: format!("could not get its CPU affinity back: {e}"),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

/// A traced, stopped process.
pub struct Tracee {
    pub pid: Pid,
    /// What the process resumes with when let go (see [`resume_regs`]).
    resume: user_regs_struct,
    /// Address of a `syscall` instruction in the process, where injected calls run.
    syscall_at: u64,
    /// Signals that arrived while we held the process; sent again when it is let go.
    deferred: Vec<Signal>,
    /// The number of the syscall it was stopped in, if any.
    interrupted: Option<u64>,
}

fn ptrace_err(op: &'static str, pid: Pid) -> impl Fn(Errno) -> ProcessError {
    move |errno| ProcessError::Ptrace {
        op,
        pid: pid.as_raw(),
        errno,
    }
}

fn options() -> Options {
    Options::PTRACE_O_TRACESYSGOOD
        | Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_EXITKILL
        // Our injected syscalls bypass the sandbox's seccomp guard: its supervisor is
        // the tracer itself, busy waiting for them.
        | Options::from_bits_retain(1 << 21) // PTRACE_O_SUSPEND_SECCOMP (not in nix)
}

impl Tracee {
    /// Attaches to a running process and stops it where it is (typically blocked in
    /// `read` waiting for its next command).
    pub fn seize(pid: Pid) -> Result<Tracee> {
        ptrace::seize(pid, options()).map_err(ptrace_err("seize", pid))?;
        let mut deferred = Vec::new();
        if let Err(e) = ptrace::interrupt(pid).map_err(ptrace_err("interrupt", pid)) {
            let _ = ptrace::detach(pid, None);
            return Err(e);
        }
        loop {
            match wait(pid)? {
                WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_STOP) => break,
                WaitStatus::Stopped(_, sig) => {
                    // A signal on its way in: take it out, give it back on detach.
                    deferred.push(sig);
                    ptrace::cont(pid, None).map_err(ptrace_err("cont", pid))?;
                }
                _ => ptrace::cont(pid, None).map_err(ptrace_err("cont", pid))?,
            }
        }
        let mut t = Tracee::stopped(pid)?;
        t.deferred = deferred;
        Ok(t)
    }

    /// Takes a process that is already in a ptrace stop.
    fn stopped(pid: Pid) -> Result<Tracee> {
        let regs = ptrace::getregs(pid).map_err(ptrace_err("getregs", pid))?;
        let mut t = Tracee {
            pid,
            resume: resume_regs(regs),
            syscall_at: 0,
            deferred: Vec::new(),
            interrupted: None,
        };
        let in_syscall = (regs.orig_rax as i64) >= 0 && regs.rip >= 2;
        t.interrupted = in_syscall.then_some(regs.orig_rax);
        t.syscall_at =
            if in_syscall && t.read_mem(regs.rip - 2, 2).ok() == Some(SYSCALL_INSN.to_vec()) {
                regs.rip - 2
            } else {
                t.find_syscall_insn()?
            };
        Ok(t)
    }

    /// A `syscall` instruction in the vDSO, for a process stopped outside a syscall.
    fn find_syscall_insn(&self) -> Result<u64> {
        let maps = crate::inspect::proc_read(self.pid.as_raw(), "maps")?;
        for line in maps.lines().filter(|l| l.ends_with("[vdso]")) {
            let range = line.split_whitespace().next().unwrap_or("");
            let (a, b) = crate::inspect::maps_range(range).unwrap_or((0, 0));
            let code = self.read_mem(a, (b - a) as usize)?;
            if let Some(off) = code.windows(2).position(|w| w == SYSCALL_INSN) {
                return Ok(a + off as u64);
            }
        }
        Err(ProcessError::Tracee {
            pid: self.pid.as_raw(),
            what: "has no syscall instruction to inject at (no vDSO)".into(),
        })
    }

    /// Runs `f` with the process and the calling thread on one CPU (see [`OneCpu`]).
    /// `f` must not fork the process (a child would inherit the pinning).
    pub fn colocated<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let pin = OneCpu::pin(self.pid);
        let r = f(self);
        pin.release()?;
        r
    }

    /// The number of the syscall the process was stopped in, if any.
    pub fn interrupted_syscall(&self) -> Option<u64> {
        self.interrupted
    }

    pub fn read_mem(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        read_memory(self.pid, addr, len)
    }

    pub fn write_mem(&self, addr: u64, data: &[u8]) -> Result<()> {
        let n = process_vm_writev(
            self.pid,
            &[IoSlice::new(data)],
            &[RemoteIoVec {
                base: addr as usize,
                len: data.len(),
            }],
        )
        .map_err(|errno| ProcessError::Ptrace {
            op: "process_vm_writev",
            pid: self.pid.as_raw(),
            errno,
        })?;
        if n != data.len() {
            return Err(ProcessError::Tracee {
                pid: self.pid.as_raw(),
                what: format!("short memory write ({n} of {} bytes)", data.len()),
            });
        }
        Ok(())
    }

    /// Runs `f` with `data` placed in the process's stack below the red zone; the
    /// bytes there are put back afterwards, so the process's memory is left exactly as
    /// it was.
    pub fn with_scratch<T>(
        &mut self,
        data: &[u8],
        f: impl FnOnce(&mut Self, u64) -> Result<T>,
    ) -> Result<T> {
        let addr = self.scratch_addr(data.len());
        let saved = self.read_mem(addr, data.len())?;
        self.write_mem(addr, data)?;
        let r = f(self, addr);
        self.write_mem(addr, &saved)?;
        r
    }

    /// Runs one syscall in the process and returns its raw result (`-errno` on error).
    /// Any process it forks is returned too (stopped, traced by us).
    fn run(&mut self, nr: i64, args: &[u64]) -> Result<(i64, Option<Pid>)> {
        let mut r = self.resume;
        r.rip = self.syscall_at;
        r.rax = nr as u64;
        r.orig_rax = u64::MAX;
        let slots = [
            &mut r.rdi, &mut r.rsi, &mut r.rdx, &mut r.r10, &mut r.r8, &mut r.r9,
        ];
        for (slot, v) in slots
            .into_iter()
            .zip(args.iter().chain(std::iter::repeat(&0)))
        {
            *slot = *v;
        }
        let pid = self.pid;
        ptrace::setregs(pid, r).map_err(ptrace_err("setregs", pid))?;
        ptrace::syscall(pid, None).map_err(ptrace_err("syscall", pid))?;
        let (mut entered, mut child) = (false, None);
        loop {
            match wait(pid)? {
                WaitStatus::PtraceSyscall(_) if !entered => entered = true,
                WaitStatus::PtraceSyscall(_) => break,
                WaitStatus::PtraceEvent(_, _, ev)
                    if ev == libc::PTRACE_EVENT_FORK
                        || ev == libc::PTRACE_EVENT_CLONE
                        || ev == libc::PTRACE_EVENT_VFORK =>
                {
                    let msg = ptrace::getevent(pid).map_err(ptrace_err("geteventmsg", pid))?;
                    child = Some(Pid::from_raw(msg as i32));
                }
                WaitStatus::Stopped(_, sig) => self.deferred.push(sig),
                _ => {}
            }
            ptrace::syscall(pid, None).map_err(ptrace_err("syscall", pid))?;
        }
        let out = ptrace::getregs(pid).map_err(ptrace_err("getregs", pid))?;
        Ok((out.rax as i64, child))
    }

    /// Runs code of the process at `at` (a [`crate::batch`] stub) with `set` registers
    /// until it traps; the process's own registers come back when it is let go.
    pub fn run_code(&mut self, at: u64, set: &[(crate::batch::Reg, u64)]) -> Result<()> {
        use crate::batch::Reg;
        let mut r = self.resume;
        r.rip = at;
        r.orig_rax = u64::MAX;
        for (reg, v) in set {
            match reg {
                Reg::Rbx => r.rbx = *v,
                Reg::R12 => r.r12 = *v,
            }
        }
        let pid = self.pid;
        ptrace::setregs(pid, r).map_err(ptrace_err("setregs", pid))?;
        ptrace::cont(pid, None).map_err(ptrace_err("cont", pid))?;
        loop {
            match wait(pid)? {
                WaitStatus::Stopped(_, Signal::SIGTRAP) => return Ok(()),
                WaitStatus::Stopped(
                    _,
                    sig @ (Signal::SIGSEGV | Signal::SIGBUS | Signal::SIGILL | Signal::SIGFPE),
                ) => {
                    // Not delivered: the process resumes from its own registers later.
                    return Err(ProcessError::Tracee {
                        pid: pid.as_raw(),
                        what: format!("got {sig} running a batch of injected operations"),
                    });
                }
                WaitStatus::Stopped(_, sig) => self.deferred.push(sig),
                _ => {}
            }
            ptrace::cont(pid, None).map_err(ptrace_err("cont", pid))?;
        }
    }

    /// Injects a syscall; a negative result becomes an error naming `call`.
    pub fn call(&mut self, call: &'static str, nr: i64, args: &[u64]) -> Result<i64> {
        let (rv, _) = self.run(nr, args)?;
        if (-4095..0).contains(&rv) {
            return Err(ProcessError::Injected {
                call,
                pid: self.pid.as_raw(),
                errno: Errno::from_raw(-rv as i32),
            });
        }
        Ok(rv)
    }

    /// Forks the process: the copy is a sibling (a child of our parent, so the same
    /// reaper owns both), starts traced and stopped, and resumes where this one would.
    pub fn fork(&mut self) -> Result<Tracee> {
        let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as u64;
        self.clone_with(flags).map(|(t, _)| t)
    }

    /// `clone(flags)` in the process (no new stack: a fork); the copy starts traced and
    /// stopped. Also returns the copy's pid as the process sees it (in its namespace for
    /// children, which `flags` may make a new one).
    pub fn clone_with(&mut self, flags: u64) -> Result<(Tracee, i32)> {
        let (rv, child) = self.run(libc::SYS_clone, &[flags, 0, 0, 0, 0])?;
        if rv < 0 {
            return Err(ProcessError::Injected {
                call: "clone",
                pid: self.pid.as_raw(),
                errno: Errno::from_raw(-rv as i32),
            });
        }
        let child = child.unwrap_or(Pid::from_raw(rv as i32));
        loop {
            match wait(child)? {
                WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_STOP)
                | WaitStatus::Stopped(_, Signal::SIGSTOP) => break,
                _ => ptrace::cont(child, None).map_err(ptrace_err("cont", child))?,
            }
        }
        let t = Tracee {
            pid: child,
            resume: self.resume,
            syscall_at: self.syscall_at,
            deferred: Vec::new(),
            interrupted: self.interrupted,
        };
        Ok((t, rv as i32))
    }

    /// A pipe in the process (close-on-exec): its (read, write) descriptor numbers there.
    pub fn pipe(&mut self) -> Result<(i32, i32)> {
        self.with_scratch(&[0u8; 8], |t, addr| {
            t.call("pipe2", libc::SYS_pipe2, &[addr, libc::O_CLOEXEC as u64])?;
            let b = t.read_mem(addr, 8)?;
            let fd = |i: usize| i32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            Ok((fd(0), fd(4)))
        })
    }

    /// Where `with_scratch` puts `len` bytes (for data that points into itself).
    pub fn scratch_addr(&self, len: usize) -> u64 {
        (self.resume.rsp - 128 - 256 - len as u64) & !15
    }

    /// Replaces the process's program: execve(path, argv, no environment). The old
    /// program's state is gone, so let it go with [`Tracee::release`], not `detach`.
    pub fn exec(&mut self, path: &str, argv: &[&str]) -> Result<()> {
        let strings: Vec<&str> = std::iter::once(path).chain(argv.iter().copied()).collect();
        let ptrs_len = (argv.len() + 2) * 8;
        let strs_len: usize = strings.iter().map(|s| s.len() + 1).sum();
        let base = self.scratch_addr(ptrs_len + strs_len);
        let mut ptrs = Vec::new();
        let mut strs = Vec::new();
        for s in &strings {
            ptrs.push(base + ptrs_len as u64 + strs.len() as u64);
            strs.extend_from_slice(s.as_bytes());
            strs.push(0);
        }
        let mut blob: Vec<u8> = Vec::new();
        // argv pointers (skip the path), NULL, then envp = NULL.
        for p in &ptrs[1..] {
            blob.extend_from_slice(&p.to_ne_bytes());
        }
        blob.extend_from_slice(&0u64.to_ne_bytes());
        blob.extend_from_slice(&0u64.to_ne_bytes());
        blob.extend_from_slice(&strs);
        self.write_mem(base, &blob)?;
        let envp = base + (argv.len() as u64 + 1) * 8;
        self.call("execve", libc::SYS_execve, &[ptrs[0], base, envp])
            .map(|_| ())
    }

    /// Lets a process that exec'd a new program run it.
    pub fn release(self) -> Result<()> {
        ptrace::detach(self.pid, None).map_err(ptrace_err("detach", self.pid))
    }

    /// Leaves the process stopped, holding the registers it will resume with.
    pub fn park(&mut self) -> Result<()> {
        ptrace::setregs(self.pid, self.resume).map_err(ptrace_err("setregs", self.pid))
    }

    /// Lets the process go on from where it was stopped.
    pub fn detach(mut self) -> Result<()> {
        self.park()?;
        ptrace::detach(self.pid, None).map_err(ptrace_err("detach", self.pid))?;
        for sig in self.deferred.drain(..) {
            let _ = nix::sys::signal::kill(self.pid, sig);
        }
        Ok(())
    }

    /// Kills the process (it is reaped by its parent, the sandbox's init).
    pub fn kill(self) {
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
    }
}

/// Reads up to `len` bytes of another process's memory (needs ptrace access to it).
pub fn read_memory(pid: Pid, addr: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = process_vm_readv(
        pid,
        &mut [IoSliceMut::new(&mut buf)],
        &[RemoteIoVec {
            base: addr as usize,
            len,
        }],
    )
    .map_err(|errno| ProcessError::Ptrace {
        op: "process_vm_readv",
        pid: pid.as_raw(),
        errno,
    })?;
    buf.truncate(n);
    Ok(buf)
}

fn wait(pid: Pid) -> Result<WaitStatus> {
    loop {
        let st = waitpid(pid, Some(WaitPidFlag::__WALL));
        // Debugging aid while DeltaCR is being brought up: every ptrace stop seen.
        if std::env::var_os("DELTABOX_TRACE_PTRACE").is_some() {
            eprintln!("wait {pid}: {st:?}");
        }
        match st {
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(ptrace_err("waitpid", pid)(errno)),
            Ok(st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                return Err(ProcessError::Tracee {
                    pid: pid.as_raw(),
                    what: format!("died while being checkpointed ({st:?})"),
                })
            }
            Ok(st) => return Ok(st),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(rax: i64, orig: i64, rip: u64) -> user_regs_struct {
        // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
        let mut r: user_regs_struct = unsafe { std::mem::zeroed() };
        r.rax = rax as u64;
        r.orig_rax = orig as u64;
        r.rip = rip;
        r
    }

    #[test]
    fn interrupted_read_is_rewound_to_run_again() {
        let r = resume_regs(regs(-ERESTARTSYS, 0, 0x1002));
        assert_eq!((r.rax, r.rip, r.orig_rax as i64), (0, 0x1000, -1));
        let r = resume_regs(regs(-ERESTART_RESTARTBLOCK, 35, 0x1002));
        assert_eq!(r.rax, libc::SYS_restart_syscall as u64);
        assert_eq!(r.rip, 0x1000);
    }

    #[test]
    fn finished_syscalls_and_user_code_are_left_alone() {
        let r = resume_regs(regs(-4, 0, 0x1002)); // EINTR: the program sees it
        assert_eq!((r.rax as i64, r.rip), (-4, 0x1002));
        let r = resume_regs(regs(-ERESTARTSYS, -1, 0x1002)); // not in a syscall
        assert_eq!(r.rip, 0x1002);
    }
}
