//! The sandbox's init: the first process inside the sandbox's namespaces.
//!
//! Started by the daemon as `deltabox __init CONFIG` with the control socket and the
//! shell's pipes on fixed descriptors. Stage 1 unshares the namespaces and forks; stage 2
//! is pid 1 of the new pid namespace: it builds the root from the overlay mount the
//! daemon sends, starts the shell, reaps orphans, and on request moves everyone onto a
//! new root (checkpoint/restore). It exits when the daemon's end of the control socket
//! closes, which tears the whole pid namespace down with it.

use crate::protocol::*;
use deltabox_layerstore::Reroot;
use deltabox_process::inspect::read_proc;
use deltabox_process::reroot::{Idle, Lineage};
use deltabox_process::tracee::Tracee;
use deltabox_process::{Move, ProcessError, Template};
use deltabox_sys::{caps, fdpass, mount, net, pidfd};
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
    if cfg.adopt.is_some() {
        adopt_main(cfg)
    }
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWCGROUP;
    if !cfg.net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).unwrap_or_else(|e| die(&format!("unshare namespaces: {e}")));
    // Stage 1 keeps nothing open, so the daemon sees EOF when the sandbox dies.
    fork_stage2(
        cfg,
        &[
            FD_CONTROL,
            FD_SHELL_STDIN,
            FD_SHELL_STDOUT,
            FD_SHELL_STDERR,
            FD_SHELL_MARKER,
        ],
    )
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
    /// Descriptors that go with the next reply.
    reply_fds: Vec<OwnedFd>,
    /// In a forked sandbox: pid 1 of the namespaces (until the root is built), then
    /// the pipe on which pid 1, the reaper, reports the exits of the processes it reaps.
    adopt_pidfd: Option<OwnedFd>,
    reaper: Option<std::fs::File>,
    /// Fork generations behind each shell, template and spare (by pid; absent: none).
    lineage: std::collections::HashMap<i32, Lineage>,
    /// A re-root in progress (of a template or the shell), a slice per idle moment.
    rerooting: Option<Rerooting>,
    /// The checkpoint the shell was restored from, if any.
    shell_from: Option<String>,
    /// Re-rooting: off (`None`), or the most it may do in one idle moment.
    cfg_reroot: Option<Idle>,
    /// When the sandbox was last in use (a request, a guarded syscall).
    quiet_since: std::time::Instant,
    /// The last idle step could not do its work (the shell was busy): wait before
    /// trying again.
    stalled: bool,
    /// The live shell after a checkpoint, moved onto the new root once the reply is sent.
    moving: Option<Move>,
    /// Mount id of the root, noted after each reply (`None`: the root just changed).
    root_mnt: Option<u64>,
    /// Collapsing processes' own memory into huge pages (`None`: off).
    huge: Option<deltabox_process::hugepages::Collapser>,
}

struct Rerooting {
    /// A template's checkpoint id; `None`: the shell.
    ck: Option<String>,
    pid: Pid,
    todo: Vec<deltabox_process::reroot::Region>,
}

/// Longest a checkpoint spends collapsing the shell's new memory into huge pages before
/// it forks (~0.5 ms per 2 MiB here; a fork of them is then ~8x cheaper, every time).
const COLLAPSE_BEFORE_FORK: std::time::Duration = std::time::Duration::from_millis(20);

/// Longest stretch of idle work (a slice of a re-root) before init looks for requests.
const IDLE_SLICE: std::time::Duration = std::time::Duration::from_millis(1);

/// Quiet time after which init does its idle work (re-roots of small mappings, then
/// missing spares).
const SHORT_IDLE: std::time::Duration = std::time::Duration::from_millis(20);
/// Quiet time after which init re-roots whole processes (a copy of tens of MB: ~0.4 ms
/// per MB here), when an agent waits for its model rather than between two calls.
const LONG_IDLE: std::time::Duration = std::time::Duration::from_millis(250);

/// How many recently used templates keep a spare copy. A spare shares every page with
/// its template: it costs page tables (about 0.2% of the template's RSS) and a task.
const SPARES: usize = 16;

/// The guard's view of the sandbox, from init's side of its pid namespace.
struct InitWorld<'a> {
    templates: &'a std::collections::HashSet<i32>,
}

impl deltabox_process::guard::World for InitWorld<'_> {
    fn is_template(&self, pid: i32) -> bool {
        // Processes of sandboxes forked from this one live in pid namespaces nested in
        // ours: as much out of reach as the templates.
        self.templates.contains(&pid) || in_nested_pid_ns(pid)
    }
    fn signal_all(&self, sig: i32, except_tgid: i32) -> usize {
        kill_each(
            proc_pids().filter(|p| *p != 1 && *p != except_tgid && !self.is_template(*p)),
            sig,
        )
    }
    fn tgid(&self, tid: i32) -> i32 {
        tgid_of(tid)
    }
    fn pidfd_target(&self, pid: i32, fd: i32) -> Option<i32> {
        pidfd_target_at(pid, fd, None)
    }
    fn read_i32(&self, pid: i32, addr: u64) -> Option<i32> {
        read_i32(pid, addr)
    }
    fn seen_by(&self, tid: i32) -> Option<Box<dyn deltabox_process::guard::World + '_>> {
        NestedWorld::of(tid).map(|w| Box::new(w) as _)
    }
}

fn read_i32(pid: i32, addr: u64) -> Option<i32> {
    let b = deltabox_process::tracee::read_memory(Pid::from_raw(pid), addr, 4).ok()?;
    Some(i32::from_ne_bytes(b.try_into().ok()?))
}

/// The guard's view for a caller in a sandbox forked from this one (directly or
/// further down): its shell inherited our seccomp filter, so we answer for it. Pids in
/// its calls are numbered in its pid namespace, `level` deep as our /proc sees it.
/// There, out of reach are: processes in ptrace stop (its templates and spares), its
/// pid 1 (the reaper), processes of another user namespace (its init) and of deeper
/// pid namespaces (its own forks).
struct NestedWorld {
    level: usize,
    pidns: std::path::PathBuf,
    userns: std::path::PathBuf,
}

fn ns_pids(pid: i32) -> Vec<i32> {
    deltabox_process::inspect::status_field(pid, "NSpid")
        .map(|v| {
            v.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl NestedWorld {
    fn of(tid: i32) -> Option<NestedWorld> {
        let level = ns_pids(tid).len();
        (level > 1).then(|| NestedWorld {
            level,
            pidns: std::fs::read_link(format!("/proc/{tid}/ns/pid")).unwrap_or_default(),
            userns: std::fs::read_link(format!("/proc/{tid}/ns/user")).unwrap_or_default(),
        })
    }

    fn same_pidns(&self, p: i32) -> bool {
        std::fs::read_link(format!("/proc/{p}/ns/pid"))
            .ok()
            .as_ref()
            == Some(&self.pidns)
    }

    fn protected(&self, p: i32, ids: &[i32]) -> bool {
        ids.len() > self.level
            || ids.get(self.level - 1) == Some(&1)
            || std::fs::read_link(format!("/proc/{p}/ns/user"))
                .ok()
                .as_ref()
                != Some(&self.userns)
            || deltabox_process::inspect::status_field(p, "State")
                .is_some_and(|s| s.starts_with('t'))
    }
}

impl deltabox_process::guard::World for NestedWorld {
    fn is_template(&self, pid: i32) -> bool {
        proc_pids().any(|p| {
            let ids = ns_pids(p);
            ids.len() >= self.level
                && ids[self.level - 1] == pid
                && (ids.len() > self.level || self.same_pidns(p))
                && self.protected(p, &ids)
        })
    }
    fn signal_all(&self, sig: i32, except_tgid: i32) -> usize {
        kill_each(
            proc_pids().filter(|p| {
                *p != except_tgid && self.same_pidns(*p) && !self.protected(*p, &ns_pids(*p))
            }),
            sig,
        )
    }
    fn tgid(&self, tid: i32) -> i32 {
        tgid_of(tid)
    }
    fn pidfd_target(&self, pid: i32, fd: i32) -> Option<i32> {
        pidfd_target_at(pid, fd, Some(self.level))
    }
    fn read_i32(&self, pid: i32, addr: u64) -> Option<i32> {
        read_i32(pid, addr)
    }
}

/// Sends `sig` to each of `pids`; returns how many got it.
fn kill_each(pids: impl Iterator<Item = i32>, sig: i32) -> usize {
    // SAFETY: kill(2) with plain integers.
    pids.filter(|p| unsafe { libc::kill(*p, sig) } == 0).count()
}

fn tgid_of(tid: i32) -> i32 {
    deltabox_process::inspect::status_field(tid, "Tgid")
        .and_then(|v| v.parse().ok())
        .unwrap_or(tid)
}

/// The pid a pidfd (or /proc/PID directory fd) of process `pid` refers to: as our
/// /proc numbers it, or `level` pid namespaces deep (a nested caller's numbering).
fn pidfd_target_at(pid: i32, fd: i32, level: Option<usize>) -> Option<i32> {
    let info = read_proc(&format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    let found = match level {
        None => deltabox_process::inspect::field(&info, "Pid").map(str::to_string),
        Some(l) => deltabox_process::inspect::field(&info, "NSpid")
            .and_then(|ids| ids.split_whitespace().nth(l - 1).map(str::to_string)),
    };
    if let Some(p) = found {
        return p.parse().ok();
    }
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    link.strip_prefix("/proc").ok()?.to_str()?.parse().ok()
}

fn stage2(cfg: InitConfig) -> ! {
    // SAFETY: FD_CONTROL was set up by the daemon and is owned by us from here on.
    let ctl = unsafe { OwnedFd::from_raw_fd(FD_CONTROL) };
    let (reroot, huge_pages) = (cfg.reroot, cfg.huge_pages);
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
        reply_fds: Vec::new(),
        adopt_pidfd: None,
        reaper: None,
        lineage: Default::default(),
        rerooting: None,
        shell_from: None,
        cfg_reroot: match reroot {
            Reroot::Off => None,
            Reroot::Eager => Some(Idle::Eager),
            Reroot::On | Reroot::Auto => Some(Idle::Short),
        },
        quiet_since: std::time::Instant::now(),
        stalled: false,
        moving: None,
        root_mnt: None,
        huge: huge_pages
            .then(|| deltabox_process::hugepages::Collapser::new(std::time::Instant::now())),
    };
    if init.cfg.adopt.is_some() {
        // SAFETY: FD_ADOPT_PIDFD was passed by the daemon and is owned by us from here;
        // it moves out of the way of the shell's descriptors (FD_SHELL_STDIN is 4 too).
        let pfd = unsafe { OwnedFd::from_raw_fd(FD_ADOPT_PIDFD) };
        let high = nix::fcntl::fcntl(pfd.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100))
            .unwrap_or_else(|e| die(&format!("dup pidfd: {e}")));
        // SAFETY: `high` is the fresh duplicate fcntl just made.
        init.adopt_pidfd = Some(unsafe { OwnedFd::from_raw_fd(high) });
        // Hold the shell's descriptor numbers (4 to 7) until the shell's pipes take
        // them, so that nothing opened meanwhile (the signalfd below) lands there.
        let null = std::fs::File::open("/dev/null")
            .unwrap_or_else(|e| die(&format!("open /dev/null: {e}")));
        drop(pfd);
        for fd in [
            FD_SHELL_STDIN,
            FD_SHELL_STDOUT,
            FD_SHELL_STDERR,
            FD_SHELL_MARKER,
        ] {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
        init.session_pipes.clear();
        // Not pid 1 here (the reaper is): keep the shell's signals off this process.
        init.protected.insert(nix::unistd::getpid().as_raw());
    }
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
        let (ctl_ev, sig_ev, reaper_ev, guard_ev) = {
            let reaper = init.reaper.as_ref().map(|r| r.as_fd());
            let mut fds = vec![
                PollFd::new(init.ctl.as_fd(), PollFlags::POLLIN),
                PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(r) = reaper {
                fds.push(PollFd::new(r, PollFlags::POLLIN));
            }
            let n_fixed = fds.len();
            fds.extend(
                init.guards
                    .iter()
                    .map(|g| PollFd::new(g.as_fd(), PollFlags::POLLIN)),
            );
            // Idle work (re-roots, spares) starts only when the sandbox has been idle for
            // a while (agents think between operations) and goes in short slices, so it
            // never holds a request up for long.
            let timeout = match init.idle_work_in() {
                None => PollTimeout::NONE,
                Some(wait) => {
                    let wait = if init.stalled {
                        wait.max(SHORT_IDLE)
                    } else {
                        wait
                    };
                    PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX)
                }
            };
            match poll(&mut fds, timeout) {
                Err(nix::Error::EINTR) => continue,
                Err(e) => die(&format!("poll: {e}")),
                Ok(0) => {
                    init.look_at_shell();
                    let quiet = init.quiet_since.elapsed();
                    if quiet >= SHORT_IDLE {
                        let idle = if quiet >= LONG_IDLE {
                            Idle::Long
                        } else {
                            Idle::Short
                        };
                        init.stalled = !init.idle_step(idle);
                    }
                    continue;
                }
                Ok(_) => {
                    let ev: Vec<PollFlags> = fds
                        .iter()
                        .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                        .collect();
                    // A request or a guarded syscall means the sandbox is in use: idle
                    // work waits for the next quiet spell. (Exits and ptrace stops,
                    // idle work's own included, do not count.)
                    if !ev[0].is_empty() || ev[n_fixed..].iter().any(|e| !e.is_empty()) {
                        init.quiet_since = std::time::Instant::now();
                        init.stalled = false;
                    }
                    let reaper_ev = if n_fixed > 2 {
                        ev[2]
                    } else {
                        PollFlags::empty()
                    };
                    (ev[0], ev[1], reaper_ev, ev[n_fixed..].to_vec())
                }
            }
        };
        init.serve_guards(&guard_ev);
        if !sig_ev.is_empty() {
            while sfd.read_signal().ok().flatten().is_some() {}
            init.reap();
        }
        if !reaper_ev.is_empty() {
            init.read_reaper();
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
            init.finish_move();
            if init.root_mnt.is_none() {
                init.root_mnt = mount_id("/").ok();
            }
            init.retired.clear();
            init.quiet_since = std::time::Instant::now();
        }
    }
}

/// Whether `pid` (as our /proc numbers it) lives in a pid namespace below ours.
fn in_nested_pid_ns(pid: i32) -> bool {
    ns_pids(pid).len() > 1
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
    fn send(&mut self, reply: &Reply) {
        let data = serde_json::to_vec(reply).expect("replies serialize");
        let fds: Vec<i32> = self.reply_fds.iter().map(|f| f.as_raw_fd()).collect();
        let _ = fdpass::send(self.ctl.as_raw_fd(), &data, &fds);
        self.reply_fds.clear();
    }

    /// Exits reported by the reaper (pid 1 of a forked sandbox), one "pid code" a line.
    fn read_reaper(&mut self) {
        use std::io::Read;
        let Some(r) = self.reaper.as_mut() else {
            return;
        };
        let mut buf = [0u8; 4096];
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => {
                // The reaper is gone, and with it the sandbox's pid namespace.
                eprintln!("deltabox init: the reaper (pid 1) is gone");
                std::process::exit(0)
            }
            Ok(n) => n,
        };
        for line in String::from_utf8_lossy(&buf[..n]).lines() {
            let mut it = line
                .split_whitespace()
                .filter_map(|x| x.parse::<i32>().ok());
            if let (Some(pid), Some(code)) = (it.next(), it.next()) {
                self.child_gone(Pid::from_raw(pid), code);
            }
        }
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

    fn lineage_of(&self, pid: Pid) -> Lineage {
        self.lineage.get(&pid.as_raw()).cloned().unwrap_or_default()
    }

    fn lineage_mut(&mut self, pid: Pid) -> &mut Lineage {
        self.lineage.entry(pid.as_raw()).or_default()
    }

    /// How long until idle work may start (zero: now), or the shell's memory is looked
    /// at (see `look_at_shell`); `None`: neither.
    fn idle_work_in(&self) -> Option<std::time::Duration> {
        let look = self
            .huge
            .as_ref()
            .filter(|_| self.shell.is_some())
            .map(|h| h.look_in(std::time::Instant::now()));
        match (self.idle_work_after_quiet(), look) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The shell is now a copy of a template: its memory is all shared with it.
    fn shell_is_a_copy(&mut self, pid: Pid) {
        if let Some(h) = self.huge.as_mut() {
            let pid = pid.as_raw();
            h.copied_shell(pid, deltabox_process::hugepages::anon_pages(pid));
        }
    }

    /// Looks at the shell's memory when that is due: grown by a huge page or more, it
    /// is due a collapse (which may go on while the shell runs).
    fn look_at_shell(&mut self) {
        if let (Some(h), Some(shell)) = (self.huge.as_mut(), self.shell) {
            let pid = shell.as_raw();
            h.look(
                pid,
                || deltabox_process::hugepages::anon_pages(pid),
                std::time::Instant::now(),
            );
        }
    }

    /// How long until idle work may start (zero: now); `None`: there is none.
    fn idle_work_after_quiet(&self) -> Option<std::time::Duration> {
        let quiet = self.quiet_since.elapsed();
        if self.rerooting.is_some()
            || self.huge.as_ref().is_some_and(|h| h.busy())
            || self.spare_wanted().is_some()
            || self.reroot_wanted(Idle::Short).is_some()
        {
            Some(SHORT_IDLE.saturating_sub(quiet))
        } else if self.reroot_wanted(Idle::Long).is_some() {
            Some(LONG_IDLE.saturating_sub(quiet))
        } else {
            None
        }
    }

    /// The process whose mappings may be due a fresh ancestry: the most recently used
    /// template (a rollback forks it, or its spare, next) and the shell (a checkpoint
    /// forks it) — the shell first if it was restored from that very template (a
    /// re-root of the template no longer reaches it). Its checkpoint id (`None`: the
    /// shell), pid, and what the idle moment allows (eager under that setting). Older
    /// templates are left as they are: each re-root is a copy.
    fn reroot_wanted(&self, idle: Idle) -> Option<(Option<String>, Pid, Idle)> {
        let idle = match self.cfg_reroot? {
            Idle::Eager => Idle::Eager,
            _ => idle,
        };
        let may = |pid: Pid| {
            self.lineage
                .get(&pid.as_raw())
                .is_some_and(|l| l.may_be_due(idle))
        };
        let newest = self.recent.back();
        let template = newest.and_then(|ck| {
            let t = self.templates.get(ck)?;
            may(t.pid()).then(|| (Some(ck.clone()), t.pid(), idle))
        });
        let shell = self.shell.filter(|s| may(*s)).map(|s| (None, s, idle));
        if newest.is_some() && newest == self.shell_from.as_ref() {
            shell.or(template)
        } else {
            template.or(shell)
        }
    }

    /// One slice of idle work: re-roots first (a spare forked from a re-rooted
    /// template starts a short lineage), then missing spares. Whether it did any.
    fn idle_step(&mut self, idle: Idle) -> bool {
        // Eager (tests): spares first, so that a re-rooted template keeps its own copy
        // (a spare forked after the re-root would share it) and the re-root shows.
        if self.cfg_reroot == Some(Idle::Eager) && self.refill_spare() {
            return true;
        }
        if let Some(h) = self.huge.as_mut().filter(|h| h.busy()) {
            // The process may be gone, or its mappings changed: the pass just ends.
            let _ = h.step(IDLE_SLICE);
            return true;
        }
        if self.rerooting.is_none() {
            if let Some((ck, pid, idle)) = self.reroot_wanted(idle) {
                if ck.is_none() && !self.shell_is_idle(pid) {
                    // Running a command: left for a later idle moment. Spares go on.
                    return self.refill_spare();
                }
                let plan = deltabox_process::reroot::plan_for(pid.as_raw()).unwrap_or_else(|e| {
                    eprintln!("deltabox init: mappings of pid {pid}: {e}");
                    Vec::new()
                });
                let todo = self.lineage_mut(pid).due(plan, idle);
                if !todo.is_empty() {
                    self.rerooting = Some(Rerooting { ck, pid, todo });
                }
                return true;
            }
        }
        let Some(mut r) = self.rerooting.take() else {
            return self.refill_spare();
        };
        let slice = |t: &mut Tracee| deltabox_process::reroot::reroot(t, &r.todo, IDLE_SLICE);
        let res = match (&r.ck, self.shell) {
            (Some(ck), _) => match self.templates.get_mut(ck) {
                Some(t) if t.pid() == r.pid => t.with_tracee(slice),
                _ => return true,
            },
            (None, Some(shell)) if shell == r.pid && self.shell_is_idle(shell) => {
                Tracee::seize(shell).and_then(|mut t| {
                    // Stopped: still blocked in read (not woken meanwhile)?
                    let reading = t.interrupted_syscall() == Some(libc::SYS_read as u64);
                    let res = if reading {
                        slice(&mut t)
                    } else {
                        Ok((0, Default::default()))
                    };
                    t.detach()?;
                    res
                })
            }
            // Another shell now (a restore): its own lineage decides.
            (None, Some(shell)) if shell != r.pid => return true,
            // The shell is busy: go on in a later idle moment.
            _ => {
                self.rerooting = Some(r);
                return false;
            }
        };
        let n = match res {
            Ok((n, _)) => n,
            Err(e) => {
                // The process is as it was (a region that fails is left alone); its
                // mappings are not tried again before they are due again.
                eprintln!("deltabox init: re-root of pid {}: {e}", r.pid);
                r.todo.len()
            }
        };
        let pid = r.pid;
        let done: Vec<u64> = r.todo.drain(..n).map(|x| x.start).collect();
        self.lineage_mut(pid).rerooted(done);
        if !r.todo.is_empty() {
            self.rerooting = Some(r);
        } else if let Some(h) = self.huge.as_mut() {
            // Its fresh pages are its own: huge pages cost no extra memory now.
            h.queue(pid.as_raw());
        }
        true
    }

    /// Whether the shell waits for its next command (blocked in read, one thread, no
    /// other process about): its memory can be re-rooted without racing anything.
    fn shell_is_idle(&self, shell: Pid) -> bool {
        let in_read = read_proc(&format!("/proc/{shell}/syscall"))
            .is_ok_and(|s| s.split_whitespace().next() == Some("0"));
        in_read
            && deltabox_process::inspect::status_field(shell.as_raw(), "Threads").as_deref()
                == Some("1")
            && !self.anyone_else()
    }

    /// Whether a process besides the shell, the templates and their spares may run.
    /// Without listing /proc (a cost that grows with every kept template): any such
    /// process is a child of pid 1 (init, which reaps orphans) or of the shell, or
    /// descends from one that is. Listing /proc is the way when the children lists are
    /// missing (CONFIG_PROC_CHILDREN) or init is not pid 1 (a forked sandbox).
    fn anyone_else(&self) -> bool {
        let children = |pid: i32| read_proc(&format!("/proc/{pid}/task/{pid}/children")).ok();
        let listed = match (nix::unistd::getpid().as_raw(), self.shell) {
            (1, Some(shell)) => children(1).zip(children(shell.as_raw())),
            (1, None) => children(1).map(|c| (c, String::new())),
            _ => None,
        };
        let Some((ours, shells)) = listed else {
            return !self.others().is_empty();
        };
        let pids = |s: &str| -> Vec<i32> {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        };
        pids(&ours)
            .into_iter()
            .filter(|p| Some(Pid::from_raw(*p)) != self.shell && !self.protected.contains(p))
            .chain(pids(&shells))
            .any(|p| !in_nested_pid_ns(p) && proc_stat(p).is_some_and(|st| !st.exiting()))
    }

    /// A new copy of the template of `ck` (none without one), its lineage noted.
    fn spawn_copy(&mut self, ck: &str) -> Option<Result<Move, ProcessError>> {
        let lineage = self.lineage_of(self.templates.get(ck)?.pid()).forked();
        let copy = self.templates.get_mut(ck)?.spawn();
        if let Ok(m) = &copy {
            self.lineage.insert(m.pid().as_raw(), lineage);
        }
        Some(copy)
    }

    /// Forks one missing spare (when idle: see the poll loop). Whether it tried.
    fn refill_spare(&mut self) -> bool {
        let Some(ck) = self.spare_wanted() else {
            return false;
        };
        match self.spawn_copy(&ck) {
            None => return false,
            Some(Ok(m)) => {
                self.protected.insert(m.pid().as_raw());
                self.spares.insert(ck, m);
            }
            Some(Err(e)) => {
                eprintln!("deltabox init: spare copy of {ck}: {e}");
                self.recent.retain(|c| *c != ck);
            }
        }
        true
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
        self.wait_until(pids, ProcStat::exiting)
    }

    /// Waits (5 s at most) until every one of `pids` is gone or in the state `done`.
    fn wait_until(&mut self, pids: &[i32], done: impl Fn(&ProcStat) -> bool) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let all = |pids: &[i32]| {
            pids.iter()
                .all(|p| proc_stat(*p).is_none_or(|st| done(&st)))
        };
        while !all(pids) && std::time::Instant::now() < until {
            self.reap();
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
        self.reap();
    }

    /// Forks the shell into the template of `ck`, then moves the sandbox (and the live
    /// shell's cwd and files) onto the root of the `Mount` message that follows. On any
    /// failure the sandbox stays where it was.
    fn checkpoint(&mut self, ck: String) -> Reply {
        let others = if self.anyone_else() {
            self.others()
        } else {
            Vec::new()
        };
        if !others.is_empty() {
            let _ = self.await_mount();
            return Reply::Busy { procs: others };
        }
        let root = self.root_mnt.map(Ok).unwrap_or_else(|| mount_id("/"));
        let forked = match (self.shell, root) {
            (None, _) => Err(Reply::Err {
                error: "the shell is not running".into(),
            }),
            (_, Err(error)) => Err(Reply::Err { error }),
            (Some(shell), Ok(root_mnt)) => {
                if let Some(h) = self.huge.as_mut() {
                    let pid = shell.as_raw();
                    let anon = deltabox_process::hugepages::anon_pages(pid);
                    h.before_fork(pid, anon, COLLAPSE_BEFORE_FORK);
                }
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
        if let Err(error) = self.switch_root(&mnt) {
            template.kill();
            live.abandon();
            return Reply::Err { error };
        }
        let pid = template.pid().as_raw();
        self.protected.insert(pid);
        let lineage = self.lineage_of(live.pid()).forked();
        self.lineage.insert(pid, lineage);
        if let Some(old) = self.templates.insert(ck.clone(), template) {
            old.kill();
        }
        self.touch(&ck);
        // The checkpoint is whole: the reply goes first, and the shell follows onto the
        // new root while the daemon writes its records (it reads its next command only
        // once moved).
        self.moving = Some(live);
        Reply::Ok(Done {
            templates: vec![TemplateInfo { ck, pid }],
            ..Done::default()
        })
    }

    /// Moves the sandbox onto `mnt` (see `switch_root`); the root's mount id is read
    /// again after the reply.
    fn switch_root(&mut self, mnt: &OwnedFd) -> R<()> {
        self.root_mnt = None;
        switch_root(mnt)
    }

    fn finish_move(&mut self) {
        if let Some(live) = self.moving.take() {
            if let Err(e) = live.finish() {
                // Only the live shell could not follow. It was killed; its exit is
                // reported and the daemon starts a fresh shell.
                eprintln!("deltabox init: moving the shell after a checkpoint: {e}");
            }
        }
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
            match spare {
                Some(m) => Some(Ok(m)),
                None => self.spawn_copy(ck),
            }
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
        // Stopped now, killed once the copy runs: the teardown of a big process then
        // goes on beside the reply, not in the way of the copy's first steps.
        for p in &doomed {
            let _ = kill(Pid::from_raw(*p), Signal::SIGSTOP);
        }
        let reply = self.restore_onto(ck, copy, &doomed);
        kill_all(&doomed);
        reply
    }

    /// The rest of a restore, with the old processes stopped.
    fn restore_onto(&mut self, ck: &str, copy: Option<Move>, doomed: &[i32]) -> Reply {
        let mnt = self.await_mount();
        let Some(mnt) = mnt else {
            if let Some(c) = copy {
                c.kill();
            }
            return Reply::Err {
                error: "the restore was abandoned: no new root arrived".into(),
            };
        };
        self.wait_until(doomed, |st| st.stopped() || st.exiting());
        // The old root's last reference goes with these: its teardown (the overlay's
        // sync) happens after the reply, not before.
        self.retired.extend(mount::open_path(Path::new("/")).ok());
        if let Err(error) = self.switch_root(&mnt) {
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
                    self.shell_from = Some(ck.to_string());
                    self.shell_is_a_copy(pid);
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
        reap_exits(WaitPidFlag::WNOHANG, |pid, code| self.child_gone(pid, code));
    }

    fn child_gone(&mut self, pid: Pid, code: i32) {
        self.lineage.remove(&pid.as_raw());
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
        if matches!(req, Request::Root) {
            self.root_mnt = None;
        }
        let res: R<Reply> = match req {
            Request::Root if self.cfg.adopt.is_some() => {
                mnt.and_then(|m| self.adopt_root(m)).map(|_| ok())
            }
            Request::Root => mnt
                .and_then(|m| self.setup_root(m, None))
                .and_then(|_| self.start_shell())
                .map(|_| ok()),
            Request::Fork { ck } => return self.fork_sandbox(&ck),
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
            if pid == 1
                || Some(Pid::from_raw(pid)) == self.shell
                || self.protected.contains(&pid)
                || in_nested_pid_ns(pid)
            {
                // (Processes of nested pid namespaces belong to sandboxes forked from
                // this one: never ours to list or kill.)
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

    /// Builds the sandbox's root on `mnt` and pivots into it. `made` holds proc and sysfs
    /// mounts made beforehand (a forked sandbox makes them before joining its mount
    /// namespace, which a user namespace owns: a fresh proc there would be refused).
    fn setup_root(&mut self, mnt: &OwnedFd, made: Option<(OwnedFd, Option<OwnedFd>)>) -> R<()> {
        let e = |x: deltabox_sys::SysError| x.to_string();
        mount::make_rprivate().map_err(e)?;
        let root = if made.is_some() {
            Path::new(NEXT)
        } else {
            Path::new(&self.cfg.staging)
        };
        mount::attach_mount(mnt, root).map_err(e)?;
        let proc_ = root.join("proc");
        let sysfs = match made {
            Some((p, sysfs)) => {
                mount::attach_mount(&p, &proc_).map_err(e)?;
                sysfs
            }
            None => {
                mount::mount_fs(
                    "proc",
                    &proc_,
                    nix::mount::MsFlags::MS_NOSUID
                        | nix::mount::MsFlags::MS_NODEV
                        | nix::mount::MsFlags::MS_NOEXEC,
                    None,
                )
                .map_err(e)?;
                None
            }
        };
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
        if let (Some(fs), true) = (&sysfs, sys.is_dir()) {
            let _ = mount::attach_mount(fs, &sys);
        } else if sys.is_dir() {
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
                self.shell_from = None;
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
                // In a forked sandbox the shell belongs in its user namespace (pid 1's),
                // out of reach of the parent sandbox, like the shell it replaces.
                let in_userns = self.cfg.adopt.is_none() || join_user_ns_of_pid1();
                if !in_userns || caps::drop_to(caps::KEEP).is_err() {
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
    let info = read_proc(&format!("/proc/self/fdinfo/{}", f.as_raw_fd()))
        .map_err(|e| format!("fdinfo of {path}: {e}"))?;
    deltabox_process::inspect::field(&info, "mnt_id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no mnt_id for {path}"))
}

fn kill_all(pids: &[i32]) {
    for p in pids {
        // Their teardown goes on after we stop waiting (see `wait_exiting`): let it
        // take spare CPU only.
        let _ = deltabox_sys::sched::run_only_when_idle(*p);
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

    fn stopped(&self) -> bool {
        self.state == "T" || self.state == "t"
    }
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    ProcStat::parse(&read_proc(&format!("/proc/{pid}/stat")).ok()?)
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

/// Flags of the clone that makes a forked sandbox's pid 1 from a template: new user
/// namespace first, so that the template (which has no capabilities) may make the rest.
fn fork_clone_flags(net: bool) -> u64 {
    let mut f = libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWCGROUP
        | libc::CLONE_PARENT
        | libc::SIGCHLD;
    if !net {
        f |= libc::CLONE_NEWNET;
    }
    f as u64
}

/// Clones the template into new namespaces with its effective uid switched to
/// `FORK_OWNER_UID` for the call, so that the new user namespace belongs to a uid no
/// sandbox process can take (its owner would have every capability in it: the parent
/// sandbox could otherwise ptrace its forks). The template gets its uid back; the copy,
/// pid 1 of the fork, becomes root of its namespace once its ids are mapped.
fn clone_owned_by_fork_uid(t: &mut Template, flags: u64) -> Result<Tracee, ProcessError> {
    use deltabox_process::guard::FORK_OWNER_UID;
    const KEEP: u64 = u32::MAX as u64; // -1: leave unchanged
    let euid: u64 = deltabox_process::inspect::status_field(t.pid().as_raw(), "Uid")
        .and_then(|v| v.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let setresuid = |tr: &mut Tracee, r: u64, e: u64, s: u64| {
        tr.call("setresuid", libc::SYS_setresuid, &[r, e, s])
            .map(|_| ())
    };
    t.with_tracee(|tr| setresuid(tr, KEEP, FORK_OWNER_UID as u64, KEEP))?;
    let made = t.clone_with(flags);
    t.with_tracee(|tr| setresuid(tr, KEEP, euid, KEEP))?;
    made.map(|(c, _)| c)
}

fn inject_close(t: &mut Tracee, fd: i32) {
    let _ = t.call("close", libc::SYS_close, &[fd as u64]);
}

fn inject_dup3(t: &mut Tracee, from: i32, to: i32) -> Result<(), ProcessError> {
    t.call("dup3", libc::SYS_dup3, &[from as u64, to as u64, 0])
        .map(|_| ())
}

/// Gives a forked sandbox's shell the capabilities a sandbox shell has (it was made
/// with all of them in its new user namespace): the same steps as `caps::drop_to`.
fn drop_caps_in(t: &mut Tracee, keep: &[u32]) -> Result<(), ProcessError> {
    for cap in 0..=caps::last_cap() {
        if !keep.contains(&cap) {
            t.call(
                "prctl(PR_CAPBSET_DROP)",
                libc::SYS_prctl,
                &[libc::PR_CAPBSET_DROP as u64, cap as u64],
            )?;
        }
    }
    t.call(
        "prctl(PR_CAP_AMBIENT)",
        libc::SYS_prctl,
        &[
            libc::PR_CAP_AMBIENT as u64,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as u64,
        ],
    )?;
    let mask = caps::mask(keep);
    // v3 header {version, pid} then two {effective, permitted, inheritable}.
    let mut blob = Vec::new();
    for w in [0x2008_0522u32, 0, mask[0], mask[0], 0, mask[1], mask[1], 0] {
        blob.extend_from_slice(&w.to_ne_bytes());
    }
    t.with_scratch(&blob, |t, addr| {
        t.call("capset", libc::SYS_capset, &[addr, addr + 8])
            .map(|_| ())
    })
}

impl Init {
    /// `Request::Fork`: a copy of the template of `ck` in new namespaces (pid 1 there)
    /// and a shell-to-be forked from it, both left running but blocked on fresh pipes,
    /// for the forked sandbox's own init to take over (see `Adopt`).
    fn fork_sandbox(&mut self, ck: &str) -> Reply {
        let Some(t) = self.templates.get_mut(ck) else {
            return Reply::NoTemplate { ck: ck.to_string() };
        };
        let (capture, dumpable) = (t.capture().clone(), t.dumpable());
        let c = match clone_owned_by_fork_uid(t, fork_clone_flags(self.cfg.net)) {
            Ok(c) => c,
            Err(e) => return process_error(e),
        };
        let cpid = c.pid;
        match prepare_fork(c, &self.session_pipes) {
            Ok((shell, shell_fds)) => match pidfd::open(cpid.as_raw()) {
                Ok(pfd) => {
                    self.reply_fds.push(pfd);
                    Reply::Forked(Adopt {
                        shell,
                        shell_fds,
                        capture,
                        dumpable,
                    })
                }
                Err(e) => {
                    let _ = kill(cpid, Signal::SIGKILL);
                    Reply::Err {
                        error: e.to_string(),
                    }
                }
            },
            Err(error) => {
                // pid 1 of the new namespaces: its death takes the shell-to-be along.
                let _ = kill(cpid, Signal::SIGKILL);
                Reply::Err { error }
            }
        }
    }

    /// `Request::Root` in a forked sandbox: proc and sysfs of the joined namespaces,
    /// then the mount namespace, the root, the shell, and pid 1 turned into the reaper.
    fn adopt_root(&mut self, mnt: &OwnedFd) -> R<()> {
        let e = |x: deltabox_sys::SysError| x.to_string();
        let pfd = self
            .adopt_pidfd
            .take()
            .ok_or("the root of a forked sandbox is built once")?;
        let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
        let proc_ = mount::fs_mount_fd("proc", attrs).map_err(e)?;
        let sysfs = mount::fs_mount_fd("sysfs", attrs | libc::MOUNT_ATTR_RDONLY).ok();
        // Our own binary, for pid 1 to exec as the reaper (from inside the joined mount
        // namespace no path reaches it).
        let exe = mount::clone_tree(Path::new("/proc/self/exe")).map_err(e)?;
        pidfd::join(&pfd, libc::CLONE_NEWNS).map_err(e)?;
        self.setup_root(mnt, Some((proc_, sysfs)))?;
        let adopt = self.cfg.adopt.clone().ok_or("not a forked sandbox")?;
        self.take_shell(&adopt)
            .map_err(|x| format!("taking over the shell: {x}"))?;
        self.start_reaper(&pfd, &exe)
            .map_err(|x| format!("starting the reaper: {x}"))
    }

    /// Takes the shell-to-be over: its pipes' other ends (they go to the daemon with
    /// the reply), a sandbox shell's capabilities, then the move of its cwd and files
    /// onto this root.
    fn take_shell(&mut self, a: &Adopt) -> R<()> {
        let spid = a.shell;
        let sfd = pidfd::open(spid).map_err(|x| x.to_string())?;
        let take = |fd: i32| pidfd::take_fd(&sfd, fd).map_err(|x| x.to_string());
        let mut ends = Vec::new();
        for fd in a.shell_fds {
            ends.push(take(fd)?);
        }
        // The shell's own ends, on the descriptors a fresh shell is started with (after
        // `exit` in the shell, or a files-only restore).
        for (fd, mine) in [
            (0, FD_SHELL_STDIN),
            (1, FD_SHELL_STDOUT),
            (2, FD_SHELL_STDERR),
            (SHELL_MARKER_FD, FD_SHELL_MARKER),
        ] {
            let f = take(fd)?;
            nix::unistd::dup2(f.as_raw_fd(), mine).map_err(|x| format!("dup2: {x}"))?;
        }
        let pe = |x: ProcessError| x.to_string();
        let mut m =
            Move::adopt(Pid::from_raw(spid), a.capture.clone(), Some(a.dumpable)).map_err(pe)?;
        // The shell keeps the guard it inherited: a process can have only one seccomp
        // listener in its filter chain, and the root sandbox's init holds it (it answers
        // for forks too: see NestedWorld).
        for fd in a.shell_fds {
            inject_close(m.tracee(), fd);
        }
        if let Err(x) = drop_caps_in(m.tracee(), caps::KEEP) {
            m.kill();
            return Err(x.to_string());
        }
        let pid = m.finish().map_err(pe)?;
        self.shell = Some(pid);
        self.shell_is_a_copy(pid);
        self.session_pipes = ends
            .iter()
            .filter_map(|f| {
                nix::sys::stat::fstat(f.as_raw_fd())
                    .ok()
                    .map(|st| st.st_ino)
            })
            .collect();
        self.reply_fds.extend(ends);
        Ok(())
    }

    /// Turns pid 1 (the template's copy, blocked on a pipe) into `deltabox __reaper`:
    /// it reaps every orphan and reports exits on a pipe to this init.
    fn start_reaper(&mut self, pfd: &OwnedFd, exe_mount: &OwnedFd) -> R<()> {
        let pe = |x: ProcessError| x.to_string();
        let mut c = Tracee::seize(Pid::from_raw(1)).map_err(pe)?;
        // Its stdout becomes the write end (fds 1 and 2 are closed: the pipe may land
        // there, so the read end goes first).
        let (r, w) = c.pipe().map_err(pe)?;
        let reports = pidfd::take_fd(pfd, r).map_err(|x| x.to_string())?;
        inject_close(&mut c, r);
        if w != 1 {
            inject_dup3(&mut c, w, 1).map_err(pe)?;
            inject_close(&mut c, w);
        }
        let exe = Path::new("/dev/.deltabox-reaper");
        std::fs::write(exe, b"").map_err(|x| format!("create {}: {x}", exe.display()))?;
        let bound = mount::attach_mount(exe_mount, exe);
        let me = nix::unistd::getpid().as_raw().to_string();
        let r = bound.map_err(|x| x.to_string()).and_then(|_| {
            c.exec(&exe.to_string_lossy(), &["deltabox", "__reaper", &me])
                .map_err(pe)
        });
        let _ = mount::detach(exe);
        let _ = std::fs::remove_file(exe);
        r?;
        c.release().map_err(pe)?;

        self.reaper = Some(std::fs::File::from(reports));
        Ok(())
    }
}

/// Prepares a fork's pid 1 (`c`, just cloned from a template, traced by us): maps its
/// user namespace, forks the shell-to-be from it, and gives both fresh pipes in place
/// of the parent sandbox's session pipes, so that neither reads the parent's commands.
/// Returns the shell's pid in the new pid namespace and the pipe ends it keeps for the
/// daemon (see `Adopt`).
fn prepare_fork(mut c: Tracee, session_pipes: &[u64]) -> R<(i32, [i32; 4])> {
    let pe = |x: ProcessError| x.to_string();
    write_id_maps(c.pid.as_raw())?;
    c.call("setresuid", libc::SYS_setresuid, &[0, 0, 0])
        .map_err(pe)?;
    let (mut s, s_ns) = c.clone_with(libc::SIGCHLD as u64).map_err(pe)?;
    let r = (|| {
        let (in_r, in_w) = s.pipe()?;
        let (out_r, out_w) = s.pipe()?;
        let (err_r, err_w) = s.pipe()?;
        let (mk_r, mk_w) = s.pipe()?;
        // Every descriptor on one of our session pipes (0-2, the marker, and copies such
        // as bash's 255) moves to the same end of the new pipe.
        let fresh = [in_r, out_w, err_w, mk_w];
        for (fd, ino) in pipe_fds(s.pid.as_raw()) {
            if let Some(i) = session_pipes.iter().position(|p| *p == ino) {
                inject_dup3(&mut s, fresh[i], fd)?;
            }
        }
        for fd in fresh {
            inject_close(&mut s, fd);
        }
        Ok([in_w, out_r, err_r, mk_r])
    })()
    .map_err(pe);
    let ends = match r {
        Ok(e) => e,
        Err(x) => {
            s.kill();
            return Err(x);
        }
    };
    s.detach().map_err(pe)?;
    // pid 1 blocks on a pipe whose writer it holds itself, until its init takes it.
    let (cr, _cw) = c.pipe().map_err(pe)?;
    inject_dup3(&mut c, cr, 0).map_err(pe)?;
    for fd in [cr, 1, 2, SHELL_MARKER_FD] {
        inject_close(&mut c, fd);
    }
    c.detach().map_err(pe)?;
    Ok((s_ns, ends))
}

/// Maps ids 1:1 in the new user namespace of `pid` (root inside is root outside, with
/// capabilities only inside). Only a process in that namespace's parent may write the
/// maps: in a forked sandbox that is its own user namespace, which this init is not in
/// (it keeps the host's capabilities), so a short-lived helper joins it to write them.
fn write_id_maps(pid: i32) -> R<()> {
    let write = || -> std::io::Result<()> {
        for f in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{pid}/{f}"), "0 0 4294967295")?;
        }
        Ok(())
    };
    match write() {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
        r => return r.map_err(|x| format!("write the id maps of the fork: {x}")),
    }
    // SAFETY: init is single-threaded, so the child may run any code; it only joins a
    // namespace, writes two files and exits.
    match unsafe { fork() } {
        Err(e) => Err(format!("fork the id-map helper: {e}")),
        Ok(ForkResult::Child) => {
            let ok = join_user_ns_of_pid1() && write().is_ok();
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        Ok(ForkResult::Parent { child }) => match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(()),
            other => Err(format!(
                "write the id maps of the fork from its parent user namespace: {other:?}"
            )),
        },
    }
}

/// Joins the user namespace of pid 1 (in a forked sandbox, the fork's own); in a
/// forked child process only, since this cannot be undone.
fn join_user_ns_of_pid1() -> bool {
    std::fs::File::open("/proc/1/ns/user").is_ok_and(|ns| {
        // SAFETY: setns with a namespace descriptor we own.
        unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWUSER) == 0 }
    })
}

/// The descriptors of process `pid` that are pipes, with the pipes' inodes.
fn pipe_fds(pid: i32) -> Vec<(i32, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let fd = e.file_name().to_str()?.parse().ok()?;
        let link = std::fs::read_link(e.path()).ok()?;
        let ino = link
            .to_str()?
            .strip_prefix("pipe:[")?
            .strip_suffix(']')?
            .parse()
            .ok()?;
        Some((fd, ino))
    })
    .collect()
}

/// `deltabox __init` of a forked sandbox, stage 1: join the namespaces the parent's
/// init made (all but the user namespace: this init keeps the host's capabilities),
/// then fork stage 2 into the new pid namespace.
fn adopt_main(cfg: InitConfig) -> ! {
    // SAFETY: closes descriptors above our fixed ones; nothing in this process uses them.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            FD_ADOPT_PIDFD as u32 + 1,
            u32::MAX,
            0,
        )
    };
    // SAFETY: the daemon passed a pidfd on FD_ADOPT_PIDFD; stage 1 only borrows it.
    let pfd = std::mem::ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(FD_ADOPT_PIDFD) });
    let flags = libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWCGROUP
        | libc::CLONE_NEWNET;
    pidfd::join(&pfd, flags).unwrap_or_else(|e| die(&format!("join the fork's namespaces: {e}")));
    fork_stage2(cfg, &[FD_CONTROL, FD_ADOPT_PIDFD])
}

/// Forks stage 2 (pid 1, or the fork's init, in the new pid namespace); stage 1 closes
/// `close` and lives on only to pass stage 2's exit status to the daemon.
fn fork_stage2(cfg: InitConfig, close: &[i32]) -> ! {
    // SAFETY: this process is single-threaded (freshly exec'd), so fork is safe.
    match unsafe { fork() } {
        Err(e) => die(&format!("fork: {e}")),
        Ok(ForkResult::Child) => {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
            stage2(cfg)
        }
        Ok(ForkResult::Parent { child }) => {
            for fd in close {
                // SAFETY: closing our own inherited descriptors.
                unsafe { libc::close(*fd) };
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

/// `deltabox __reaper SUPERVISOR`: pid 1 of a forked sandbox. Reaps every process that
/// ends up its child and reports "pid code" lines on stdout (a pipe to the sandbox's
/// init, SUPERVISOR); exits, taking the pid namespace along, when that init is gone.
pub fn reaper_main(supervisor: i32) -> ! {
    // SAFETY: closes descriptors the template's copy held; we use only stdout.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0) };
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    let _ = mask.thread_block();
    let Ok(sfd) =
        nix::sys::signalfd::SignalFd::with_flags(&mask, nix::sys::signalfd::SfdFlags::SFD_NONBLOCK)
    else {
        std::process::exit(1)
    };
    let Ok(sup) = pidfd::open(supervisor) else {
        std::process::exit(0)
    };
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    loop {
        reap_exits(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL, report);
        let mut fds = [
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sup.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) if fds[1].revents().is_some_and(|r| !r.is_empty()) => std::process::exit(0),
            _ => while sfd.read_signal().ok().flatten().is_some() {},
        }
    }
}

/// Reaps every child that has ended (waitpid with `flags`, WNOHANG among them), passing
/// each pid and its exit code (128 + signal when killed) to `gone`.
fn reap_exits(flags: WaitPidFlag, mut gone: impl FnMut(Pid, i32)) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(flags)) {
            Ok(WaitStatus::Exited(pid, code)) => gone(pid, code),
            Ok(WaitStatus::Signaled(pid, sig, _)) => gone(pid, 128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        }
    }
}

fn report(pid: Pid, code: i32) {
    let line = format!("{pid} {code}\n");
    // SAFETY: write(2) of a buffer we own to our stdout.
    unsafe { libc::write(1, line.as_ptr().cast(), line.len()) };
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
