//! The sandbox's init: the first process inside the sandbox's namespaces.
//!
//! Started by the daemon as `deltabox __init CONFIG` with the control socket and the
//! shell's pipes on fixed descriptors. Stage 1 unshares the namespaces and forks; stage 2
//! is pid 1 of the new pid namespace: it builds the root from the overlay mount the
//! daemon sends, starts the shell, reaps orphans, and on request moves everyone onto a
//! new root (checkpoint/restore). It exits when the daemon's end of the control socket
//! closes, which tears the whole pid namespace down with it.

use crate::protocol::*;
use deltabox_process::{Move, ProcessError, Template};
use deltabox_sys::{caps, fdpass, mount, net};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

type R<T> = Result<T, String>;

fn die(msg: &str) -> ! {
    eprintln!("deltabox init: {msg}");
    std::process::exit(111)
}

/// Entry point of `deltabox __init`.
pub fn init_main(config_json: &str) -> ! {
    let cfg: InitConfig =
        serde_json::from_str(config_json).unwrap_or_else(|e| die(&format!("bad config: {e}")));
    // Whatever else the daemon's environment leaked to us must not reach the sandbox
    // (and a stray pipe in the shell would make it impossible to checkpoint).
    // SAFETY: closes descriptors above our fixed ones; nothing in this process uses them.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            FD_SHELL_MARKER as u32 + 1,
            u32::MAX,
            0,
        )
    };
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if !cfg.net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).unwrap_or_else(|e| die(&format!("unshare namespaces: {e}")));
    // SAFETY: this process is single-threaded (freshly exec'd), so fork is safe.
    match unsafe { fork() } {
        Err(e) => die(&format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            stage2(cfg)
        }
        Ok(ForkResult::Parent { child }) => {
            // Stage 1 keeps nothing open, so the daemon sees EOF when the sandbox dies.
            for fd in [
                FD_CONTROL,
                FD_SHELL_STDIN,
                FD_SHELL_STDOUT,
                FD_SHELL_STDERR,
                FD_SHELL_MARKER,
            ] {
                // SAFETY: closing our own inherited descriptors.
                unsafe { libc::close(fd) };
            }
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, c)) => std::process::exit(c),
                    Ok(WaitStatus::Signaled(..)) => std::process::exit(137),
                    Err(nix::Error::EINTR) | Ok(_) => continue,
                    Err(_) => std::process::exit(1),
                }
            }
        }
    }
}

struct Init {
    cfg: InitConfig,
    ctl: OwnedFd,
    shell: Option<Pid>,
    /// Seccomp listeners of the shells started so far (a filter lives as long as any
    /// process that inherited it).
    guards: Vec<OwnedFd>,
    /// Frozen process templates by checkpoint id.
    templates: std::collections::BTreeMap<String, Template>,
    /// Their pids: what the guard protects.
    protected: std::collections::HashSet<i32>,
    /// Inodes of the shell's pipes to the daemon (shared by a shell and its copies).
    session_pipes: Vec<u64>,
    /// Last references to roots left behind, dropped once the reply is sent.
    retired: Vec<OwnedFd>,
    /// Pre-forked copies of the most recently used templates: a restore then starts
    /// from a ready copy instead of forking (see `refill_spare`).
    spares: std::collections::HashMap<String, Move>,
    /// Checkpoints by last use, most recent last.
    recent: std::collections::VecDeque<String>,
}

/// Idle time after which init forks a missing spare.
const SPARE_IDLE_MS: u16 = 20;

/// How many recently used templates keep a spare copy. A spare shares every page with
/// its template: it costs page tables (about 0.2% of the template's RSS) and a task.
const SPARES: usize = 16;

/// The guard's view of the sandbox, from init's side of its pid namespace.
struct InitWorld<'a> {
    templates: &'a std::collections::HashSet<i32>,
}

impl deltabox_process::guard::World for InitWorld<'_> {
    fn is_template(&self, pid: i32) -> bool {
        self.templates.contains(&pid)
    }
    fn signal_all(&self, sig: i32, except_tgid: i32) -> usize {
        let mut n = 0;
        for pid in proc_pids() {
            if pid == 1 || pid == except_tgid || self.is_template(pid) {
                continue;
            }
            // SAFETY: kill(2) with plain integers.
            if unsafe { libc::kill(pid, sig) } == 0 {
                n += 1;
            }
        }
        n
    }
    fn tgid(&self, tid: i32) -> i32 {
        deltabox_process::inspect::status_field(tid, "Tgid")
            .and_then(|v| v.parse().ok())
            .unwrap_or(tid)
    }
    fn pidfd_target(&self, pid: i32, fd: i32) -> Option<i32> {
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
        if let Some(p) = deltabox_process::inspect::field(&info, "Pid") {
            return p.parse().ok();
        }
        let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
        link.strip_prefix("/proc").ok()?.to_str()?.parse().ok()
    }
    fn read_i32(&self, pid: i32, addr: u64) -> Option<i32> {
        let b = deltabox_process::tracee::read_memory(Pid::from_raw(pid), addr, 4).ok()?;
        Some(i32::from_ne_bytes(b.try_into().ok()?))
    }
}

fn stage2(cfg: InitConfig) -> ! {
    // SAFETY: FD_CONTROL was set up by the daemon and is owned by us from here on.
    let ctl = unsafe { OwnedFd::from_raw_fd(FD_CONTROL) };
    let mut init = Init {
        cfg,
        ctl,
        shell: None,
        guards: Vec::new(),
        templates: Default::default(),
        protected: Default::default(),
        session_pipes: [
            FD_SHELL_STDIN,
            FD_SHELL_STDOUT,
            FD_SHELL_STDERR,
            FD_SHELL_MARKER,
        ]
        .iter()
        .filter_map(|fd| nix::sys::stat::fstat(*fd).ok().map(|st| st.st_ino))
        .collect(),
        retired: Vec::new(),
        spares: Default::default(),
        recent: Default::default(),
    };
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block()
        .unwrap_or_else(|e| die(&format!("block SIGCHLD: {e}")));
    let sfd = nix::sys::signalfd::SignalFd::with_flags(
        &mask,
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
    )
    .unwrap_or_else(|e| die(&format!("signalfd: {e}")));
    loop {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let (ctl_ev, sig_ev, guard_ev) = {
            let mut fds = vec![
                PollFd::new(init.ctl.as_fd(), PollFlags::POLLIN),
                PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            ];
            fds.extend(
                init.guards
                    .iter()
                    .map(|g| PollFd::new(g.as_fd(), PollFlags::POLLIN)),
            );
            // Spares are made only when the sandbox has been idle for a while (agents
            // think between operations), so they never delay a request.
            let timeout = if init.spare_wanted().is_some() {
                PollTimeout::from(SPARE_IDLE_MS)
            } else {
                PollTimeout::NONE
            };
            match poll(&mut fds, timeout) {
                Err(nix::Error::EINTR) => continue,
                Err(e) => die(&format!("poll: {e}")),
                Ok(0) => {
                    init.refill_spare();
                    continue;
                }
                Ok(_) => {
                    let ev: Vec<PollFlags> = fds
                        .iter()
                        .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                        .collect();
                    (ev[0], ev[1], ev[2..].to_vec())
                }
            }
        };
        init.serve_guards(&guard_ev);
        if !sig_ev.is_empty() {
            while sfd.read_signal().ok().flatten().is_some() {}
            init.reap();
        }
        if ctl_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            let (msg, fds) = match fdpass::recv(init.ctl.as_raw_fd()) {
                Ok(m) => m,
                Err(_) => std::process::exit(0),
            };
            if msg.is_empty() {
                // The daemon is gone: so is the sandbox.
                std::process::exit(0);
            }
            let reply = match serde_json::from_slice::<Request>(&msg) {
                Ok(req) => init.handle(req, fds),
                Err(e) => Reply::Err {
                    error: format!("bad request: {e}"),
                },
            };
            init.send(&reply);
            init.retired.clear();
        }
    }
}

/// Pids of the sandbox's pid namespace (init's /proc).
fn proc_pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
}

const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];
const PROC_MASKED: &[&str] = &[
    "kcore",
    "keys",
    "timer_list",
    "sysrq-trigger",
    "latency_stats",
    "sched_debug",
    "kallsyms",
];
const PROC_READONLY: &[&str] = &["sys", "irq", "bus", "fs"];
/// Staging mount point for the next root, on the sandbox's own /dev tmpfs (never a layer).
const NEXT: &str = "/dev/.deltabox-next";

impl Init {
    fn send(&self, reply: &Reply) {
        let data = serde_json::to_vec(reply).expect("replies serialize");
        let _ = fdpass::send(self.ctl.as_raw_fd(), &data, &[]);
    }

    /// Marks `ck` as just used (it keeps a spare while among the `SPARES` most recent).
    fn touch(&mut self, ck: &str) {
        self.recent.retain(|c| c != ck);
        self.recent.push_back(ck.to_string());
        while self.recent.len() > SPARES {
            if let Some(old) = self.recent.pop_front() {
                if let Some(m) = self.spares.remove(&old) {
                    m.kill();
                }
            }
        }
    }

    /// The most recently used template without a spare, if any.
    fn spare_wanted(&self) -> Option<String> {
        self.recent
            .iter()
            .rev()
            .find(|c| !self.spares.contains_key(*c) && self.templates.contains_key(*c))
            .cloned()
    }

    /// Forks one missing spare (when idle: see the poll loop).
    fn refill_spare(&mut self) {
        let Some(ck) = self.spare_wanted() else {
            return;
        };
        let Some(t) = self.templates.get_mut(&ck) else {
            return;
        };
        match t.spawn() {
            Ok(m) => {
                self.protected.insert(m.pid().as_raw());
                self.spares.insert(ck, m);
            }
            Err(e) => {
                eprintln!("deltabox init: spare copy of {ck}: {e}");
                self.recent.retain(|c| *c != ck);
            }
        }
    }

    /// Reads the `Mount` message that completes a checkpoint or restore.
    fn await_mount(&mut self) -> Option<OwnedFd> {
        let (msg, mut fds) = fdpass::recv(self.ctl.as_raw_fd()).ok()?;
        match serde_json::from_slice::<Request>(&msg) {
            Ok(Request::Mount) if !fds.is_empty() => Some(fds.remove(0)),
            _ => None,
        }
    }

    /// SIGKILLs `pids` and waits until none can touch a file any more, so nothing old
    /// writes into the root the sandbox moves onto next.
    fn kill_and_wait(&mut self, pids: &[i32]) {
        kill_all(pids);
        self.wait_exiting(pids);
    }

    /// Waits until every one of `pids` (already sent SIGKILL) is exiting or gone.
    fn wait_exiting(&mut self, pids: &[i32]) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !pids.iter().all(|p| is_exiting(*p)) && std::time::Instant::now() < until {
            self.reap();
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        self.reap();
    }

    /// Forks the shell into the template of `ck`, then moves the sandbox (and the live
    /// shell's cwd and files) onto the root of the `Mount` message that follows. On any
    /// failure the sandbox stays where it was.
    fn checkpoint(&mut self, ck: String) -> Reply {
        let forked = match (self.shell, mount_id("/")) {
            (None, _) => Err(Reply::Err {
                error: "the shell is not running".into(),
            }),
            (_, Err(error)) => Err(Reply::Err { error }),
            (Some(shell), Ok(root_mnt)) => {
                let ctx = deltabox_process::Context {
                    root_mnt,
                    session_pipes: &self.session_pipes,
                };
                deltabox_process::checkpoint(shell, &ctx).map_err(process_error)
            }
        };
        let mnt = self.await_mount();
        let (template, live) = match forked {
            Ok(x) => x,
            Err(reply) => return reply,
        };
        let Some(mnt) = mnt else {
            template.kill();
            live.abandon();
            return Reply::Err {
                error: "the checkpoint was abandoned: no new root arrived".into(),
            };
        };
        if let Err(error) = switch_root(&mnt) {
            template.kill();
            live.abandon();
            return Reply::Err { error };
        }
        let pid = template.pid().as_raw();
        self.protected.insert(pid);
        if let Some(old) = self.templates.insert(ck.clone(), template) {
            old.kill();
        }
        self.touch(&ck);
        if let Err(e) = live.finish() {
            // The checkpoint is whole; only the live shell could not follow. It was
            // killed; its exit is reported and the daemon starts a fresh shell.
            eprintln!("deltabox init: moving the shell after a checkpoint: {e}");
        }
        Reply::Ok(Done {
            templates: vec![TemplateInfo { ck, pid }],
            ..Done::default()
        })
    }

    /// Kills everything that runs, moves onto the root of the `Mount` message that
    /// follows, and makes a copy of the template of `ck` the shell (or, with
    /// `files_only`, a fresh shell: the files alone).
    fn restore(&mut self, ck: &str, files_only: bool) -> Reply {
        if !files_only && !self.templates.contains_key(ck) {
            let _ = self.await_mount();
            return Reply::NoTemplate { ck: ck.to_string() };
        }
        // Fork first (a fork next to a process tearing down the same pages is slower),
        // then kill everything else and wait only until each is inside exit(2): the
        // freeing of its memory goes on beside the rest of the restore.
        let forked = if files_only {
            None
        } else {
            let spare = self
                .spares
                .remove(ck)
                .filter(|m| !is_exiting(m.pid().as_raw()));
            spare
                .map(Ok)
                .or_else(|| self.templates.get_mut(ck).map(|t| t.spawn()))
        };
        let copy = match forked {
            Some(Err(e)) => {
                let _ = self.await_mount();
                return process_error(e);
            }
            Some(Ok(m)) => Some(m),
            None => None,
        };
        let mut doomed: Vec<i32> = self.others().iter().map(|p| p.pid).collect();
        doomed.extend(self.shell.map(|p| p.as_raw()));
        if let Some(c) = &copy {
            doomed.retain(|p| *p != c.pid().as_raw());
        }
        kill_all(&doomed);
        let mnt = self.await_mount();
        let Some(mnt) = mnt else {
            if let Some(c) = copy {
                c.kill();
            }
            return Reply::Err {
                error: "the restore was abandoned: no new root arrived".into(),
            };
        };
        self.wait_exiting(&doomed);
        // The old root's last reference goes with these: its teardown (the overlay's
        // sync) happens after the reply, not before.
        self.retired.extend(mount::open_path(Path::new("/")).ok());
        if let Err(error) = switch_root(&mnt) {
            if let Some(c) = copy {
                c.kill();
            }
            return Reply::Err { error };
        }
        match copy {
            Some(c) => match c.finish() {
                Ok(pid) => {
                    self.protected.remove(&pid.as_raw());
                    self.touch(ck);
                    self.shell = Some(pid);
                    ok()
                }
                Err(e) => process_error(e),
            },
            None => match self.start_shell() {
                Ok(()) => Reply::Ok(Done {
                    fresh_shell: true,
                    ..Done::default()
                }),
                Err(error) => Reply::Err { error },
            },
        }
    }

    /// Answers pending guard notifications; forgets listeners nobody uses any more.
    fn serve_guards(&mut self, events: &[nix::poll::PollFlags]) {
        use nix::poll::PollFlags;
        let mut gone = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            if ev.contains(PollFlags::POLLIN) {
                let world = InitWorld {
                    templates: &self.protected,
                };
                if let Err(e) = deltabox_process::guard::serve_one(&self.guards[i], &world) {
                    eprintln!("deltabox init: guard: {e}");
                }
            } else if ev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                gone.push(i);
            }
        }
        for i in gone.into_iter().rev() {
            self.guards.remove(i);
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.child_gone(pid, code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.child_gone(pid, 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }

    fn child_gone(&mut self, pid: Pid, code: i32) {
        if self.protected.remove(&pid.as_raw()) {
            // Killed from outside the sandbox (inside, the guard forbids it).
            self.templates.retain(|_, t| t.pid() != pid);
            self.spares.retain(|_, m| m.pid() != pid);
        }
        if self.shell == Some(pid) {
            self.shell = None;
            self.send(&Reply::ShellExited { code });
        }
    }

    fn handle(&mut self, req: Request, fds: Vec<OwnedFd>) -> Reply {
        let mnt = fds
            .first()
            .ok_or_else(|| "no mount descriptor sent".to_string());
        let res: R<Reply> = match req {
            Request::Root => mnt
                .and_then(|m| self.setup_root(m))
                .and_then(|_| self.start_shell())
                .map(|_| ok()),
            Request::Checkpoint { ck } => return self.checkpoint(ck),
            Request::Restore { ck, files_only } => return self.restore(&ck, files_only),
            Request::Mount => Err("a mount arrived with no checkpoint or restore to use it".into()),
            Request::DropTemplate { ck } => {
                // The pids stay protected until init reaps them.
                if let Some(t) = self.templates.remove(&ck) {
                    t.kill();
                }
                if let Some(m) = self.spares.remove(&ck) {
                    m.kill();
                }
                self.recent.retain(|c| *c != ck);
                Ok(ok())
            }
            Request::Procs => Ok(Reply::Ok(Done {
                procs: self.others(),
                ..Done::default()
            })),
            Request::KillOthers => {
                let pids: Vec<i32> = self.others().iter().map(|p| p.pid).collect();
                self.kill_and_wait(&pids);
                Ok(Reply::Ok(Done {
                    count: pids.len(),
                    ..Done::default()
                }))
            }
            Request::SignalShell { signal } => match (self.shell, Signal::try_from(signal)) {
                (Some(p), Ok(s)) => kill(p, s)
                    .map(|_| ok())
                    .map_err(|e| format!("signal shell: {e}")),
                (None, _) => Err("the shell is not running".into()),
                (_, Err(e)) => Err(format!("bad signal {signal}: {e}")),
            },
            Request::RestartShell => {
                if let Some(p) = self.shell.take() {
                    let _ = kill(p, Signal::SIGKILL);
                    let _ = waitpid(p, None);
                }
                self.start_shell().map(|_| ok())
            }
        };
        res.unwrap_or_else(|error| Reply::Err { error })
    }

    /// Other live processes of the sandbox (zombies excluded: they hold no files).
    fn others(&self) -> Vec<ProcInfo> {
        let mut out = Vec::new();
        for pid in proc_pids() {
            if pid == 1 || Some(Pid::from_raw(pid)) == self.shell || self.protected.contains(&pid) {
                continue;
            }
            // Exiting processes (a restore's old shell freeing its memory) are harmless.
            match proc_stat(pid) {
                Some(st) if !st.exiting() => out.push(ProcInfo {
                    pid,
                    comm: st.comm,
                    state: st.state,
                }),
                _ => {}
            }
        }
        out
    }

    fn setup_root(&mut self, mnt: &OwnedFd) -> R<()> {
        let e = |x: deltabox_sys::SysError| x.to_string();
        mount::make_rprivate().map_err(e)?;
        let root = Path::new(&self.cfg.staging);
        mount::attach_mount(mnt, root).map_err(e)?;
        let proc_ = root.join("proc");
        mount::mount_fs(
            "proc",
            &proc_,
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            None,
        )
        .map_err(e)?;
        for m in PROC_READONLY {
            let p = proc_.join(m);
            if p.exists() {
                mount::bind_mount(&p, &p, true).map_err(e)?;
            }
        }
        for m in PROC_MASKED {
            let p = proc_.join(m);
            if p.exists() {
                mount::bind_mount(Path::new("/dev/null"), &p, true).map_err(e)?;
            }
        }
        let dev = root.join("dev");
        mount::mount_fs(
            "tmpfs",
            &dev,
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NOEXEC,
            Some("mode=755,size=65536k"),
        )
        .map_err(e)?;
        for n in DEV_NODES {
            let (src, dst) = (Path::new("/dev").join(n), dev.join(n));
            if src.exists() {
                std::fs::write(&dst, b"").map_err(|x| format!("create {}: {x}", dst.display()))?;
                mount::bind_mount(&src, &dst, false).map_err(e)?;
            }
        }
        for (link, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
            ("ptmx", "pts/ptmx"),
        ] {
            let _ = std::os::unix::fs::symlink(target, dev.join(link));
        }
        for d in ["pts", "shm", ".deltabox-next"] {
            std::fs::create_dir(dev.join(d)).map_err(|x| format!("mkdir /dev/{d}: {x}"))?;
        }
        mount::mount_fs(
            "devpts",
            &dev.join("pts"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=620"),
        )
        .map_err(e)?;
        mount::mount_fs(
            "tmpfs",
            &dev.join("shm"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some("mode=1777,size=65536k"),
        )
        .map_err(e)?;
        let sys = root.join("sys");
        if sys.is_dir() {
            // Read-only sysfs; without CAP_SYS_ADMIN the sandbox cannot remount it.
            let _ = mount::mount_fs(
                "sysfs",
                &sys,
                nix::mount::MsFlags::MS_RDONLY
                    | nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV
                    | nix::mount::MsFlags::MS_NOEXEC,
                None,
            );
        }
        std::env::set_current_dir(root).map_err(|x| format!("chdir to new root: {x}"))?;
        mount::pivot_root_cwd().map_err(e)?;
        mount::detach(Path::new(".")).map_err(e)?;
        std::env::set_current_dir("/").map_err(|x| format!("chdir /: {x}"))?;
        nix::unistd::sethostname(&self.cfg.hostname).map_err(|x| format!("sethostname: {x}"))?;
        if !self.cfg.net {
            net::loopback_up().map_err(e)?;
        }
        Ok(())
    }

    fn start_shell(&mut self) -> R<()> {
        let argv: Vec<std::ffi::CString> = self
            .cfg
            .shell
            .iter()
            .map(|a| std::ffi::CString::new(a.as_str()).unwrap())
            .collect();
        let envp: Vec<std::ffi::CString> = self
            .cfg
            .env
            .iter()
            .map(|(k, v)| std::ffi::CString::new(format!("{k}={v}")).unwrap())
            .collect();
        if !Path::new(&self.cfg.shell[0]).exists() {
            return Err(format!("the sandbox's root has no {}: the persistent shell runs inside the sandbox, so its base must contain bash", self.cfg.shell[0]));
        }
        let (guard_rx, guard_tx) =
            fdpass::seqpacket_pair().map_err(|e| format!("guard socket: {e}"))?;
        // SAFETY: init is single-threaded, so the child may run any code before exec;
        // it only makes syscalls (dup2, sigprocmask, prctl, capset, seccomp, sendmsg).
        match unsafe { fork() } {
            Err(e) => Err(format!("fork shell: {e}")),
            Ok(ForkResult::Parent { child }) => {
                drop(guard_tx);
                self.shell = Some(child);
                match fdpass::recv(guard_rx.as_raw_fd()) {
                    Ok((_, mut fds)) if !fds.is_empty() => {
                        self.guards.push(fds.remove(0));
                        Ok(())
                    }
                    Ok((msg, _)) => Err(format!(
                        "the shell could not install its seccomp guard: {}",
                        String::from_utf8_lossy(&msg)
                    )),
                    Err(e) => Err(format!("receive the shell's seccomp guard: {e}")),
                }
            }
            Ok(ForkResult::Child) => {
                // SAFETY: dup2/close on descriptors we own, in the freshly forked child.
                unsafe {
                    libc::dup2(FD_SHELL_STDIN, 0);
                    libc::dup2(FD_SHELL_STDOUT, 1);
                    libc::dup2(FD_SHELL_STDERR, 2);
                    libc::dup2(FD_SHELL_MARKER, SHELL_MARKER_FD);
                    for fd in [
                        FD_CONTROL,
                        FD_SHELL_STDIN,
                        FD_SHELL_STDOUT,
                        FD_SHELL_STDERR,
                        FD_SHELL_MARKER,
                    ] {
                        libc::close(fd);
                    }
                }
                let _ = SigSet::all().thread_unblock();
                let _ = nix::unistd::setsid();
                if caps::drop_to(caps::KEEP).is_err() {
                    // SAFETY: exiting the forked child without running destructors.
                    unsafe { libc::_exit(112) };
                }
                drop(guard_rx);
                match deltabox_process::guard::install() {
                    Ok(l) => {
                        let _ = fdpass::send(guard_tx.as_raw_fd(), b"guard", &[l.as_raw_fd()]);
                    }
                    Err(e) => {
                        let _ = fdpass::send(guard_tx.as_raw_fd(), e.to_string().as_bytes(), &[]);
                        // SAFETY: as above.
                        unsafe { libc::_exit(113) };
                    }
                }
                let _ = nix::unistd::execve(&argv[0], &argv, &envp);
                // SAFETY: as above.
                unsafe { libc::_exit(127) }
            }
        }
    }
}

fn ok() -> Reply {
    Reply::Ok(Done::default())
}

fn process_error(e: ProcessError) -> Reply {
    match e {
        ProcessError::Unsupported {
            pid,
            comm,
            reason,
            hint,
        } => Reply::Unsupported {
            pid,
            comm,
            reason,
            hint,
        },
        other => Reply::Err {
            error: other.to_string(),
        },
    }
}

/// Mount id of the mount at `path` (as /proc/PID/fdinfo reports it for open files).
fn mount_id(path: &str) -> R<u64> {
    let f = std::fs::File::open(path).map_err(|e| format!("open {path}: {e}"))?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd()))
        .map_err(|e| format!("fdinfo of {path}: {e}"))?;
    deltabox_process::inspect::field(&info, "mnt_id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no mnt_id for {path}"))
}

fn kill_all(pids: &[i32]) {
    for p in pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
}

/// What init needs of /proc/PID/stat.
struct ProcStat {
    comm: String,
    state: String,
    flags: u64,
}

impl ProcStat {
    fn parse(stat: &str) -> Option<ProcStat> {
        let (a, b) = (stat.find('(')?, stat.rfind(')')?);
        let rest: Vec<&str> = stat.get(b + 1..)?.split_whitespace().collect();
        // After the comm: state is field 3, flags field 9.
        Some(ProcStat {
            comm: stat.get(a + 1..b)?.to_string(),
            state: rest.first()?.to_string(),
            flags: rest.get(6)?.parse().ok()?,
        })
    }

    /// A zombie, or inside exit(2) (PF_EXITING: it will not run another system call;
    /// what is left is freeing its memory).
    fn exiting(&self) -> bool {
        const PF_EXITING: u64 = 0x4;
        self.state == "Z" || self.state == "X" || self.flags & PF_EXITING != 0
    }
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    ProcStat::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Gone or exiting: it cannot touch a file any more.
fn is_exiting(pid: i32) -> bool {
    proc_stat(pid).is_none_or(|st| st.exiting())
}

/// Moves the sandbox onto a new root mount without touching the layers of the old one.
///
/// Every process whose root (and cwd) is the old root moves with pivot_root(2); /proc
/// and /dev move along as mounts. The old root is then detached: nothing writes to it
/// again, which is what makes its upper layer safe to freeze.
fn switch_root(mnt: &OwnedFd) -> R<()> {
    let e = |x: deltabox_sys::SysError| x.to_string();
    let next = Path::new(NEXT);
    mount::attach_mount(mnt, next).map_err(e)?;
    if let Err(err) = mount::move_mount_path(Path::new("/proc"), &next.join("proc")) {
        let _ = mount::detach(next);
        return Err(err.to_string());
    }
    let undo_proc = |err: String| {
        let _ = mount::move_mount_path(&next.join("proc"), Path::new("/proc"));
        let _ = mount::detach(next);
        err
    };
    let old_dev = mount::open_path(Path::new("/dev")).map_err(|x| undo_proc(x.to_string()))?;
    let new_dev = mount::open_path(&next.join("dev")).map_err(|x| undo_proc(x.to_string()))?;
    std::env::set_current_dir(next).map_err(|x| undo_proc(format!("chdir {NEXT}: {x}")))?;
    mount::pivot_root_cwd().map_err(|x| undo_proc(x.to_string()))?;
    // From here the new root is in place; /dev still hangs under the old root, stacked
    // on top of "/", and is moved by descriptor since no path reaches it.
    mount::move_mount_fds(&old_dev, &new_dev).map_err(e)?;
    mount::detach(Path::new(".")).map_err(e)?;
    std::env::set_current_dir("/").map_err(|x| format!("chdir /: {x}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ProcStat;

    #[test]
    fn stat_lines_are_parsed_past_odd_command_names() {
        let line = "42 (py (x) 3) R 1 42 42 0 -1 4194560 100 0 0 0";
        let st = ProcStat::parse(line).unwrap();
        assert_eq!((st.comm.as_str(), st.state.as_str()), ("py (x) 3", "R"));
        assert!(!st.exiting());
        // PF_EXITING set: exiting although still running.
        let st = ProcStat::parse("7 (sh) R 1 7 7 0 -1 4194564 0").unwrap();
        assert!(st.exiting());
        assert!(ProcStat::parse("8 (sh) Z 1 8 8 0 -1 0 0")
            .unwrap()
            .exiting());
        assert!(ProcStat::parse("garbage").is_none());
    }
}
