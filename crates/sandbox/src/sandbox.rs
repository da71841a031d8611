//! One running sandbox: its init process, control socket and persistent shell, and the
//! two operations that move it between layer stacks (checkpoint and restore).

use crate::protocol::*;
use crate::shell::{ms_since, ExecOutput, Session, ShellPipes, Sink, Wait, GRACE};
use crate::{Paths, SandboxError};
use deltabox_layerstore::{CheckpointRecord, LayerStore, SandboxRecord, ShellKind};
use deltabox_process::MemoryCost;
use deltabox_sys::fdpass;
use deltabox_sys::mount::{overlay_mount_fd, OverlaySpec};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of one `exec`.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub timeout: Option<Duration>,
    /// Bytes of stdout and of stderr kept (each); the rest is counted, not kept.
    pub max_output: usize,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            timeout: None,
            max_output: 8 << 20,
        }
    }
}

pub struct Sandbox {
    pub id: String,
    child: std::process::Child,
    ctl: OwnedFd,
    pipes: ShellPipes,
    store: Arc<LayerStore>,
    seq: u64,
    shell_dead: Option<i32>,
    shell: ShellKind,
    templates: Templates,
}

/// A sandbox's frozen templates by checkpoint id, shared with the manager so that their
/// memory can be read without waiting for a running command.
#[derive(Clone, Default)]
pub struct Templates {
    /// Checkpoint id -> template pid inside the sandbox.
    table: Arc<std::sync::Mutex<BTreeMap<String, i32>>>,
    /// Host pid of the sandbox's outer init (the parent of its pid-1 init).
    outer: i32,
    /// Host pid of a forked sandbox's pid 1 (the reaper: the templates' parent).
    reaper: Option<i32>,
}

impl Templates {
    /// Each live template's memory, by checkpoint id.
    pub fn memory(&self) -> BTreeMap<String, (i32, MemoryCost)> {
        let table = self.table.lock().unwrap().clone();
        let Some(init) = self
            .reaper
            .or_else(|| children(self.outer).into_iter().next())
        else {
            return BTreeMap::new();
        };
        let host: std::collections::HashMap<i32, i32> = children(init)
            .into_iter()
            .filter_map(|hp| Some((ns_pid(hp)?, hp)))
            .collect();
        table
            .into_iter()
            .filter_map(|(ck, pid)| {
                let cost = deltabox_process::memory::cost(*host.get(&pid)?)?;
                Some((ck, (pid, cost)))
            })
            .collect()
    }
}

/// Children of host process `pid`.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The pid of host process `pid` in its innermost pid namespace.
fn ns_pid(pid: i32) -> Option<i32> {
    deltabox_process::inspect::status_field(pid, "NSpid")?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SandboxError::Io(format!("pipe: {e}")))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Sandbox {
    /// Starts the sandbox described by `rec` (its init, root and shell).
    pub fn start(
        store: Arc<LayerStore>,
        paths: &Paths,
        rec: &SandboxRecord,
    ) -> Result<Self, SandboxError> {
        let (ctl, ctl_child) =
            fdpass::seqpacket_pair().map_err(SandboxError::sys("control socket"))?;
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (mark_r, mark_w) = pipe()?;
        let child = spawn_init(
            paths,
            rec,
            init_config(paths, rec, None),
            &[&ctl_child, &in_r, &out_w, &err_w, &mark_w],
        )?;
        drop((ctl_child, in_r, out_w, err_w, mark_w));
        let pipes = ShellPipes::new(in_w, out_r, err_r, mark_r);
        let mut sb = Sandbox::new(rec, child, ctl, pipes, store, None);
        let mnt = sb.mount_for(&rec.layers, &rec.base, &rec.upper)?;
        if let Err(e) = sb.call(Request::Root, Some(mnt), "setting up its root") {
            sb.kill();
            return Err(e);
        }
        if let Err(e) = sb.greet_shell() {
            sb.kill();
            return Err(e);
        }
        Ok(sb)
    }

    /// Starts a forked sandbox on what its parent's init made (`Sandbox::fork_from`):
    /// its init joins those namespaces, builds the root and takes the shell over; the
    /// shell's pipes come back with the reply.
    pub fn adopt(
        store: Arc<LayerStore>,
        paths: &Paths,
        rec: &SandboxRecord,
        fork: Fork,
    ) -> Result<Self, SandboxError> {
        let (ctl, ctl_child) =
            fdpass::seqpacket_pair().map_err(SandboxError::sys("control socket"))?;
        let reaper = pidfd_host_pid(&fork.pidfd);
        let child = spawn_init(
            paths,
            rec,
            init_config(paths, rec, Some(fork.adopt)),
            &[&ctl_child, &fork.pidfd],
        )?;
        drop((ctl_child, fork.pidfd));
        let mut child = KillOnDrop(Some(child));
        let mnt = mount_for(&store, &rec.layers, &rec.base, &rec.upper)?;
        let during = "taking over the forked shell";
        send_request(&ctl, &rec.id, &Request::Root, Some(mnt), during)?;
        // (No shell to have exited yet: init takes it over while answering.)
        let (reply, mut fds) = next_reply(&ctl, &rec.id, during, &mut None)?;
        match reply {
            Reply::Ok(_) if fds.len() == 4 => {}
            other => {
                return Err(SandboxError::Init {
                    id: rec.id.clone(),
                    during,
                    detail: format!("unexpected reply {other:?} with {} descriptors", fds.len()),
                })
            }
        }
        let mark_r = fds.pop().unwrap();
        let err_r = fds.pop().unwrap();
        let out_r = fds.pop().unwrap();
        let in_w = fds.pop().unwrap();
        let child = child.0.take().unwrap();
        let pipes = ShellPipes::new(in_w, out_r, err_r, mark_r);
        Ok(Sandbox::new(rec, child, ctl, pipes, store, reaper))
    }

    fn new(
        rec: &SandboxRecord,
        child: std::process::Child,
        ctl: OwnedFd,
        pipes: ShellPipes,
        store: Arc<LayerStore>,
        reaper: Option<i32>,
    ) -> Sandbox {
        let outer = child.id() as i32;
        Sandbox {
            id: rec.id.clone(),
            child,
            ctl,
            pipes,
            store,
            seq: 0,
            shell_dead: None,
            shell: rec.shell,
            templates: Templates {
                outer,
                reaper,
                ..Default::default()
            },
        }
    }

    /// Has this sandbox's init make a fork of checkpoint `ck`'s template in new
    /// namespaces, for [`Sandbox::adopt`].
    pub fn fork_from(&mut self, ck: &str) -> Result<Fork, SandboxError> {
        let during = "forking";
        self.send_ctl(&Request::Fork { ck: ck.to_string() }, None, during)?;
        let (reply, mut fds) = self.await_reply_fds(during)?;
        match (reply, fds.pop()) {
            (Reply::Forked(adopt), Some(pidfd)) => Ok(Fork { adopt, pidfd }),
            (other, _) => Err(SandboxError::Init {
                id: self.id.clone(),
                during,
                detail: format!("unexpected reply {other:?}"),
            }),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn mount_for(
        &self,
        layers: &[String],
        base: &std::path::Path,
        upper: &str,
    ) -> Result<OwnedFd, SandboxError> {
        mount_for(&self.store, layers, base, upper)
    }

    /// Sends a request to init and waits for its reply (noting shell exits on the way).
    fn call(
        &mut self,
        req: Request,
        fd: Option<OwnedFd>,
        during: &'static str,
    ) -> Result<Done, SandboxError> {
        self.send_ctl(&req, fd, during)?;
        self.await_reply(during)
    }

    /// A two-part request (checkpoint, restore): init starts on the processes while we
    /// build the new root's overlay mount, then gets the mount (none if building failed).
    fn call_with_mount(
        &mut self,
        req: Request,
        layers: &[String],
        base: &std::path::Path,
        upper: &str,
        during: &'static str,
    ) -> Result<Done, SandboxError> {
        self.send_ctl(&req, None, during)?;
        let (fd, failed) = match self.mount_for(layers, base, upper) {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e)),
        };
        let reply = self
            .send_ctl(&Request::Mount, fd, during)
            .and_then(|_| self.await_reply(during));
        match failed {
            Some(e) => Err(e),
            None => reply,
        }
    }

    fn send_ctl(
        &self,
        req: &Request,
        fd: Option<OwnedFd>,
        during: &'static str,
    ) -> Result<(), SandboxError> {
        send_request(&self.ctl, &self.id, req, fd, during)
    }

    fn await_reply(&mut self, during: &'static str) -> Result<Done, SandboxError> {
        let id = self.id.clone();
        match self.await_reply_fds(during)? {
            (Reply::Ok(done), _) => Ok(done),
            (other, _) => Err(SandboxError::Init {
                id,
                during,
                detail: format!("unexpected reply {other:?}"),
            }),
        }
    }

    /// The next reply that is not a shell-exit notice, with the descriptors it carries;
    /// errors become `SandboxError`s.
    fn await_reply_fds(
        &mut self,
        during: &'static str,
    ) -> Result<(Reply, Vec<OwnedFd>), SandboxError> {
        next_reply(&self.ctl, &self.id, during, &mut self.shell_dead)
    }

    fn recv_ctl(&self, timeout: Duration) -> Result<(Reply, Vec<OwnedFd>), String> {
        recv_reply(&self.ctl, timeout)
    }

    fn greet_shell(&mut self) -> Result<(), SandboxError> {
        self.pipes.send(&self.shell.prelude())?;
        let mut o = Sink::new(0);
        let mut e = Sink::new(4096);
        let deadline = Instant::now() + Duration::from_secs(10);
        let why = loop {
            match self
                .pipes
                .wait("ready", Some(deadline), &self.ctl, &mut o, &mut e)
            {
                Wait::Marker(_) => {
                    self.pipes.discard();
                    self.shell_dead = None;
                    return Ok(());
                }
                Wait::Control => match self.recv_ctl(Duration::from_secs(5)).map(|r| r.0) {
                    Ok(Reply::ShellExited { code }) => {
                        self.shell_dead = Some(code);
                        break format!("it exited with status {code}");
                    }
                    Ok(_) => continue,
                    Err(err) => break err,
                },
                Wait::Timeout => break "no answer within 10 s".into(),
                Wait::Closed => break "its pipes closed".into(),
            }
        };
        Err(SandboxError::Init {
            id: self.id.clone(),
            during: "starting the shell",
            detail: format!(
                "the {:?} session did not start ({why}): {}",
                self.shell,
                String::from_utf8_lossy(&e.out).trim()
            ),
        })
    }

    /// Replaces a dead or stuck shell. A shell killed while starting (by a process the
    /// old one left running, say a `pkill`) is started again.
    fn restart_shell(&mut self) -> Result<(), SandboxError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.call(Request::RestartShell, None, "restarting the shell")?;
            self.shell_dead = None;
            match self.greet_shell() {
                Err(_) if attempt < 3 && self.shell_dead.is_some() => continue,
                r => return r,
            }
        }
    }

    fn next_tag(&mut self, kind: char) -> String {
        self.seq += 1;
        format!("{kind}{}", self.seq)
    }

    /// Runs `command` in the persistent shell.
    pub fn exec(&mut self, command: &str, opts: &ExecOptions) -> Result<ExecOutput, SandboxError> {
        if command.contains('\0') {
            return Err(SandboxError::BadCommand(
                "the command contains a NUL byte".into(),
            ));
        }
        let mut restarted = false;
        if self.shell_dead.is_some() {
            self.restart_shell()?;
            restarted = true;
        }
        let start = Instant::now();
        let tag = self.next_tag('x');
        self.pipes.send(&self.shell.run_line(command, &tag))?;
        let (mut out, mut err) = (Sink::new(opts.max_output), Sink::new(opts.max_output));
        let deadline = opts.timeout.map(|t| start + t);
        let mut res = ExecOutput {
            shell_restarted: restarted,
            ..Default::default()
        };
        loop {
            match self
                .pipes
                .wait(&tag, deadline, &self.ctl, &mut out, &mut err)
            {
                Wait::Marker(code) => {
                    res.exit_code = if res.timed_out { 124 } else { code };
                    break;
                }
                Wait::Closed => return Err(self.gone()),
                Wait::Control => {
                    match self.recv_ctl(Duration::from_secs(5)).map(|r| r.0) {
                        Ok(Reply::ShellExited { code }) => {
                            // The command ended the shell (`exit`, `exec`, a fatal signal).
                            res.exit_code = if res.timed_out { 124 } else { code };
                            self.shell_dead = Some(code);
                            self.restart_shell()?;
                            res.shell_restarted = true;
                            break;
                        }
                        Ok(_) => continue,
                        Err(_) => return Err(self.gone()),
                    }
                }
                Wait::Timeout => {
                    if res.timed_out {
                        // Interrupting did not bring the shell back: replace it.
                        self.restart_shell()?;
                        res.exit_code = 124;
                        res.shell_restarted = true;
                        break;
                    }
                    res.timed_out = true;
                    res.killed = self
                        .call(Request::KillOthers, None, "killing a timed-out command")?
                        .count;
                    // A builtin loop in the shell itself needs SIGINT: an interactive bash
                    // abandons the current line and reads the next one.
                    let mut o2 = Sink::new(0);
                    let mut e2 = Sink::new(0);
                    if let Wait::Marker(_) = self.pipes.wait(
                        &tag,
                        Some(Instant::now() + Duration::from_millis(100)),
                        &self.ctl,
                        &mut o2,
                        &mut e2,
                    ) {
                        res.exit_code = 124;
                        break;
                    }
                    let _ = self.call(
                        Request::SignalShell {
                            signal: libc::SIGINT,
                        },
                        None,
                        "interrupting a timed-out command",
                    );
                    self.pipes.send(&self.shell.done_line(124, &tag))?;
                    return self.finish_timeout(tag, res, out, err, start);
                }
            }
        }
        Ok(self.finish(res, out, err, start))
    }

    fn finish_timeout(
        &mut self,
        tag: String,
        mut res: ExecOutput,
        mut out: Sink,
        mut err: Sink,
        start: Instant,
    ) -> Result<ExecOutput, SandboxError> {
        match self.pipes.wait(
            &tag,
            Some(Instant::now() + GRACE),
            &self.ctl,
            &mut out,
            &mut err,
        ) {
            Wait::Marker(_) => {}
            Wait::Closed => return Err(self.gone()),
            _ => {
                self.restart_shell()?;
                res.shell_restarted = true;
            }
        }
        res.exit_code = 124;
        Ok(self.finish(res, out, err, start))
    }

    fn finish(&self, mut res: ExecOutput, out: Sink, err: Sink, start: Instant) -> ExecOutput {
        res.duration_ms = ms_since(start);
        res.truncated = out.truncated() || err.truncated();
        res.stdout_bytes = out.total;
        res.stderr_bytes = err.total;
        res.stdout = out.out;
        res.stderr = err.out;
        res
    }

    fn gone(&mut self) -> SandboxError {
        let why = match self.child.try_wait() {
            Ok(Some(st)) => format!("its init exited ({st})"),
            _ => "its shell pipes closed".into(),
        };
        SandboxError::Dead {
            id: self.id.clone(),
            why,
        }
    }

    /// Freezes the live upper layer and the shell's process as a checkpoint, and goes
    /// on from there on a fresh upper.
    pub fn checkpoint(
        &mut self,
        rec: &SandboxRecord,
        label: Option<String>,
    ) -> Result<(CheckpointRecord, SandboxRecord), SandboxError> {
        let start = Instant::now();
        if self.shell_dead.is_some() {
            self.restart_shell()?;
        }
        // (Init refuses with `Busy` while other processes run: they could keep writing
        // the layer being frozen.)
        let ck_id = deltabox_layerstore::new_id(deltabox_layerstore::IdKind::Checkpoint);
        let new_upper = self.store.new_layer()?;
        let mut frozen = vec![rec.upper.clone()];
        frozen.extend(rec.layers.iter().cloned());
        let switched = self.call_with_mount(
            Request::Checkpoint { ck: ck_id.clone() },
            &frozen,
            &rec.base,
            &new_upper,
            "checkpointing",
        );
        match switched {
            Err(e) => {
                self.store.discard_layer(&new_upper);
                return Err(e);
            }
            Ok(done) => {
                let mut table = self.templates.table.lock().unwrap();
                for t in done.templates {
                    table.insert(t.ck, t.pid);
                }
            }
        }
        let ck = CheckpointRecord {
            id: ck_id,
            sandbox: rec.id.clone(),
            parent: rec.head.clone(),
            layers: frozen.clone(),
            base: rec.base.clone(),
            created_unix_ms: now_ms(),
            label,
            removed: false,
            ms: ms_since(start),
        };
        let next = SandboxRecord {
            layers: frozen,
            upper: new_upper.clone(),
            head: Some(ck.id.clone()),
            ..rec.clone()
        };
        // Checkpoint first, sandbox second: the store rolls an interrupted pair forward.
        self.store.put_checkpoint(&ck)?;
        self.store.put_sandbox(&next)?;
        self.store.unpin(&new_upper);
        Ok((ck, next))
    }

    /// Makes files and shell exactly those of `ck`, on a fresh upper over its layers;
    /// everything running is killed. With `files_only`, the files alone and a fresh
    /// shell (the way back for a checkpoint whose template is gone).
    pub fn restore(
        &mut self,
        rec: &SandboxRecord,
        ck: &CheckpointRecord,
        files_only: bool,
    ) -> Result<SandboxRecord, SandboxError> {
        let new_upper = self.store.new_layer()?;
        let restored = self.call_with_mount(
            Request::Restore {
                ck: ck.id.clone(),
                files_only,
            },
            &ck.layers,
            &ck.base,
            &new_upper,
            "restoring",
        );
        let done = match restored {
            Ok(d) => d,
            Err(e) => {
                self.store.discard_layer(&new_upper);
                return Err(e);
            }
        };
        // Whatever the old shell left in the pipes is not the restored one's.
        self.pipes.discard();
        self.shell_dead = None;
        if done.fresh_shell {
            self.greet_shell()?;
        }
        let next = SandboxRecord {
            layers: ck.layers.clone(),
            upper: new_upper.clone(),
            head: Some(ck.id.clone()),
            ..rec.clone()
        };
        self.store.put_sandbox(&next)?;
        self.store.unpin(&new_upper);
        Ok(next)
    }

    /// The sandbox's process templates, readable while the sandbox is busy.
    pub fn templates(&self) -> Templates {
        self.templates.clone()
    }

    /// Releases the process template of a removed checkpoint.
    pub fn drop_template(&mut self, ck: &str) -> Result<(), SandboxError> {
        self.call(
            Request::DropTemplate { ck: ck.to_string() },
            None,
            "dropping a template",
        )?;
        self.templates.table.lock().unwrap().remove(ck);
        Ok(())
    }

    /// Kills the sandbox (its whole pid namespace) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a parent sandbox's init made for a fork (see [`Sandbox::fork_from`]).
pub struct Fork {
    pub adopt: Adopt,
    /// A pidfd of the fork's pid 1.
    pub pidfd: OwnedFd,
}

/// Kills an init that did not make it into a `Sandbox`.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends `req` (with `fd`, if any) on a sandbox's control socket.
fn send_request(
    ctl: &OwnedFd,
    id: &str,
    req: &Request,
    fd: Option<OwnedFd>,
    during: &'static str,
) -> Result<(), SandboxError> {
    let data = serde_json::to_vec(req).expect("requests serialize");
    let fds: Vec<i32> = fd.iter().map(|f| f.as_raw_fd()).collect();
    fdpass::send(ctl.as_raw_fd(), &data, &fds).map_err(|e| SandboxError::Init {
        id: id.to_string(),
        during,
        detail: e.to_string(),
    })
}

/// The next reply on a sandbox's control socket that is not a shell-exit notice (those
/// go to `shell_dead`), with the descriptors it carries; errors become `SandboxError`s.
fn next_reply(
    ctl: &OwnedFd,
    id: &str,
    during: &'static str,
    shell_dead: &mut Option<i32>,
) -> Result<(Reply, Vec<OwnedFd>), SandboxError> {
    let id = id.to_string();
    let init_err = |detail: String| SandboxError::Init {
        id: id.clone(),
        during,
        detail,
    };
    loop {
        let (reply, fds) = recv_reply(ctl, Duration::from_secs(30)).map_err(init_err)?;
        match reply {
            Reply::ShellExited { code } => *shell_dead = Some(code),
            Reply::Err { error } => return Err(init_err(error)),
            Reply::Unsupported {
                pid,
                comm,
                reason,
                hint,
            } => {
                return Err(SandboxError::NotCapturable {
                    id,
                    pid,
                    comm,
                    reason,
                    hint,
                })
            }
            Reply::NoTemplate { ck } => return Err(SandboxError::NoTemplate { id, ck }),
            Reply::Busy { procs } => {
                return Err(SandboxError::BackgroundProcesses {
                    id,
                    procs: procs
                        .iter()
                        .map(|p| format!("pid {} `{}`", p.pid, p.comm))
                        .collect(),
                    pids: procs.iter().map(|p| p.pid.to_string()).collect(),
                })
            }
            other => return Ok((other, fds)),
        }
    }
}

/// The host pid behind a pidfd (its fdinfo's `Pid:`, as the daemon's namespace sees it).
fn pidfd_host_pid(pidfd: &OwnedFd) -> Option<i32> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd())).ok()?;
    deltabox_process::inspect::field(&info, "Pid")?.parse().ok()
}

fn mount_for(
    store: &LayerStore,
    layers: &[String],
    base: &std::path::Path,
    upper: &str,
) -> Result<OwnedFd, SandboxError> {
    let mut lowers: Vec<PathBuf> = layers.iter().map(|l| store.layer_dir(l)).collect();
    lowers.push(base.to_path_buf());
    let spec = OverlaySpec {
        lowers,
        upper: Some((store.layer_dir(upper), store.work_dir(upper))),
    };
    overlay_mount_fd(&spec).map_err(SandboxError::sys("mount the sandbox's overlay"))
}

fn recv_reply(ctl: &OwnedFd, timeout: Duration) -> Result<(Reply, Vec<OwnedFd>), String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(ctl.as_fd(), PollFlags::POLLIN)];
    let t = PollTimeout::try_from(timeout.as_millis() as u64).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, t) {
        Ok(0) => return Err("no answer from init".into()),
        Err(e) => return Err(format!("poll: {e}")),
        Ok(_) => {}
    }
    let (msg, passed) = fdpass::recv(ctl.as_raw_fd()).map_err(|e| e.to_string())?;
    if msg.is_empty() {
        return Err("init exited (the sandbox is gone)".into());
    }
    let reply = serde_json::from_slice(&msg).map_err(|e| format!("bad reply: {e}"))?;
    Ok((reply, passed))
}

fn init_config(paths: &Paths, rec: &SandboxRecord, adopt: Option<Adopt>) -> InitConfig {
    InitConfig {
        hostname: rec.id.clone(),
        net: rec.net,
        staging: paths.staging().to_string_lossy().into_owned(),
        shell: rec.shell.argv(),
        env: vec![
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
            ("HOME".into(), "/root".into()),
            ("TERM".into(), "dumb".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("DELTABOX_SANDBOX".into(), rec.id.clone()),
        ],
        adopt,
        reroot: rec.reroot.resolved(),
        huge_pages: rec.huge_pages.enabled(),
    }
}

/// Runs `deltabox __init CONFIG` with `fds` on descriptors 3, 4, ...
fn spawn_init(
    paths: &Paths,
    rec: &SandboxRecord,
    cfg: InitConfig,
    fds: &[&OwnedFd],
) -> Result<std::process::Child, SandboxError> {
    let child_fds: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut cmd = std::process::Command::new(&paths.init_exe);
    cmd.arg("__init")
        .arg(serde_json::to_string(&cfg).expect("config serializes"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    // SAFETY: the closure only calls fcntl/dup2/close (async-signal-safe) on descriptors
    // that stay open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0i32; 8];
            for (i, fd) in child_fds.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD, 100);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high.iter().take(child_fds.len()).enumerate() {
                if libc::dup2(*fd, FD_CONTROL + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(*fd);
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| SandboxError::Init {
        id: rec.id.clone(),
        during: "starting",
        detail: format!("run {}: {e}", paths.init_exe.display()),
    })
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill();
    }
}
