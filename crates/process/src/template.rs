//! Frozen templates: the checkpoint of a process is a stopped fork of it.
//!
//! Checkpoint: stop the live process, fork it (the copy is the template: its own
//! session, non-dumpable, parked in a ptrace stop), and hand the live one back as a
//! [`Move`] to finish once the caller has switched the sandbox's root. Restore: fork the
//! template again and finish the copy's move onto the current root. The template itself
//! never runs, so it can be restored any number of times.

use crate::error::Result;
use crate::inspect::{inspect, Capture, Context};
use crate::tracee::{OneCpu, Tracee};
use nix::unistd::Pid;
use std::os::unix::ffi::OsStrExt;

/// A process stopped half-way through a move to a new root: its root follows the
/// sandbox's root switch; [`Move::finish`] brings its cwd and open files along.
pub struct Move {
    tracee: Tracee,
    cap: Capture,
    /// PR_SET_DUMPABLE to give back on finish (a copy of a template stays non-dumpable,
    /// out of the sandbox's reach, until it runs).
    dumpable: Option<u64>,
}

impl Move {
    pub fn pid(&self) -> Pid {
        self.tracee.pid
    }

    /// Reopens the process's cwd and files by path (resolved under its current root) and
    /// lets it run. On failure the process is killed: a half-moved copy is not exact.
    pub fn finish(mut self) -> Result<Pid> {
        let (cap, dumpable) = (&self.cap, self.dumpable);
        let moved = self.tracee.colocated(|t| {
            relocate(t, cap)?;
            match dumpable {
                Some(d) => set_dumpable(t, d),
                None => Ok(()),
            }
        });
        if let Err(e) = moved {
            self.tracee.kill();
            return Err(e);
        }
        let pid = self.tracee.pid;
        self.tracee.detach()?;
        Ok(pid)
    }

    /// Takes over a running copy of a checkpointed process (made by another tracer, which
    /// let it go) to finish its move onto the current root.
    pub fn adopt(pid: Pid, cap: Capture, dumpable: Option<u64>) -> Result<Move> {
        Ok(Move {
            tracee: Tracee::seize(pid)?,
            cap,
            dumpable,
        })
    }

    /// The process, held: for syscalls to inject before [`Move::finish`].
    pub fn tracee(&mut self) -> &mut Tracee {
        &mut self.tracee
    }

    /// Lets the process run on, unmoved (the checkpoint was abandoned).
    pub fn abandon(self) {
        let _ = self.tracee.detach();
    }

    /// Kills it instead (a restore that failed half-way).
    pub fn kill(self) {
        self.tracee.kill();
    }
}

pub struct Template {
    tracee: Tracee,
    cap: Capture,
    /// PR_GET_DUMPABLE of the process at the checkpoint, given back to its copies.
    dumpable: u64,
}

fn cstr(p: &std::path::Path) -> Vec<u8> {
    let mut v = p.as_os_str().as_bytes().to_vec();
    v.push(0);
    v
}

fn relocate(t: &mut Tracee, cap: &Capture) -> Result<()> {
    t.with_scratch(&cstr(&cap.cwd), |t, addr| {
        t.call("chdir", libc::SYS_chdir, &[addr]).map(|_| ())
    })?;
    for f in &cap.files {
        let newfd = t.with_scratch(&cstr(&f.path), |t, addr| {
            let flags = (f.flags & !libc::O_CLOEXEC) | libc::O_CLOEXEC;
            t.call(
                "openat",
                libc::SYS_openat,
                &[libc::AT_FDCWD as u64, addr, flags as u64, 0],
            )
        })? as u64;
        let keep_cloexec = (f.flags & libc::O_CLOEXEC) as u64;
        t.call("dup3", libc::SYS_dup3, &[newfd, f.fd as u64, keep_cloexec])?;
        t.call("close", libc::SYS_close, &[newfd])?;
        t.call(
            "lseek",
            libc::SYS_lseek,
            &[f.fd as u64, f.pos, libc::SEEK_SET as u64],
        )?;
    }
    Ok(())
}

/// Makes a process that was forked from a live one independent of it: its own session
/// and process group (signals to the live one's group miss it).
fn detach_session(t: &mut Tracee) -> Result<()> {
    t.call("setsid", libc::SYS_setsid, &[]).map(|_| ())
}

fn set_dumpable(t: &mut Tracee, v: u64) -> Result<()> {
    t.call("prctl", libc::SYS_prctl, &[libc::PR_SET_DUMPABLE as u64, v])
        .map(|_| ())
}

/// Checkpoints `live`: returns the template and the live process, stopped, to be moved
/// with [`Move::finish`] after the root switch (or let go with [`Move::abandon`]).
pub fn checkpoint(live: Pid, ctx: &Context) -> Result<(Template, Move)> {
    let cap = inspect(live.as_raw(), ctx)?;
    // One CPU from the stop to the template's setup: every ptrace round trip is then a
    // task switch, not the wake-up of another (idle) vCPU.
    let pin = OneCpu::pin(live);
    let mut tracee = Tracee::seize(live)?;
    let made = (|| {
        let mut t = tracee.fork()?;
        let r = (|| {
            detach_session(&mut t)?;
            let dumpable = t.call("prctl", libc::SYS_prctl, &[libc::PR_GET_DUMPABLE as u64])?;
            set_dumpable(&mut t, 0)?;
            t.park()?;
            pin.unpin_fork(t.pid)?;
            Ok(dumpable as u64)
        })();
        match r {
            Ok(d) => Ok((t, d)),
            Err(e) => {
                t.kill();
                Err(e)
            }
        }
    })();
    let made = match (made, pin.release()) {
        (Ok(x), Ok(())) => Ok(x),
        (Ok((t, _)), Err(e)) => {
            t.kill();
            Err(e)
        }
        (Err(e), _) => Err(e),
    };
    match made {
        Ok((t, dumpable)) => Ok((
            Template {
                tracee: t,
                cap: cap.clone(),
                dumpable,
            },
            Move {
                tracee,
                cap,
                dumpable: None,
            },
        )),
        Err(e) => {
            let _ = tracee.detach();
            Err(e)
        }
    }
}

impl Template {
    pub fn pid(&self) -> Pid {
        self.tracee.pid
    }

    /// What was captured at the checkpoint (cwd, open files).
    pub fn capture(&self) -> &Capture {
        &self.cap
    }

    /// PR_GET_DUMPABLE of the process at the checkpoint.
    pub fn dumpable(&self) -> u64 {
        self.dumpable
    }

    /// A copy made with extra clone flags (new namespaces, for a forked sandbox): the
    /// caller drives it. Returns it and its pid as the template sees it.
    pub fn clone_with(&mut self, flags: u64) -> Result<(Tracee, i32)> {
        self.with_tracee(|t| t.clone_with(flags))
    }

    /// Runs `f` on the held template (injected syscalls), which is parked again after.
    pub fn with_tracee<T>(&mut self, f: impl FnOnce(&mut Tracee) -> Result<T>) -> Result<T> {
        let r = f(&mut self.tracee);
        self.tracee.park()?;
        r
    }

    /// The process's working directory at the checkpoint.
    pub fn cwd(&self) -> &std::path::Path {
        &self.cap.cwd
    }

    /// A new live copy of the checkpointed process, stopped and as protected as the
    /// template (its own session, non-dumpable); [`Move::finish`] moves it onto the
    /// current root and starts it.
    pub fn spawn(&mut self) -> Result<Move> {
        let mut child = self.tracee.fork()?;
        self.tracee.park()?;
        if let Err(e) = detach_session(&mut child) {
            child.kill();
            return Err(e);
        }
        Ok(Move {
            tracee: child,
            cap: self.cap.clone(),
            dumpable: Some(self.dumpable),
        })
    }

    pub fn kill(self) {
        self.tracee.kill();
    }
}
