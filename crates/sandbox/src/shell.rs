//! The daemon's side of the persistent shell: bash reads commands from a pipe and reports
//! each command's end on a marker pipe, so its state (cwd, env, variables, functions)
//! lives on between executions.

use crate::SandboxError;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Output of one command.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
    pub duration_ms: f64,
    pub timed_out: bool,
    /// Bytes the command wrote in total; more than was kept when truncated.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub truncated: bool,
    /// The shell itself exited or had to be killed: shell state was reset.
    pub shell_restarted: bool,
    /// Processes killed because the command timed out.
    pub killed: usize,
}

/// Bash setup sent once when a shell starts. `__dbx_done` reports the end of a command
/// and keeps `$?` as the user's; `__dbx_park`/`__dbx_unpark` move the shell's cwd out of
/// the way while the root is switched, and back (pivot_root(2) moves only a cwd that is
/// exactly the old root).
pub(crate) fn prelude(marker_fd: i32) -> String {
    format!(
        "PS1= PS2= PS4= PROMPT_COMMAND=; set +H +o history; unset HISTFILE; \
__dbx_done() {{ printf '\\036DBX %s %s\\n' \"$2\" \"$1\" >&{marker_fd}; return \"$1\"; }}; \
__dbx_park() {{ __dbx_rc=$?; __dbx_pwd=$PWD; __dbx_opwd=$OLDPWD; builtin cd /; printf '\\036DBX %s 0\\n' \"$1\" >&{marker_fd}; }}; \
__dbx_unpark() {{ builtin cd -- \"$__dbx_pwd\" 2>/dev/null || builtin cd /; OLDPWD=$__dbx_opwd; unset __dbx_pwd __dbx_opwd; printf '\\036DBX %s 0\\n' \"$1\" >&{marker_fd}; return $__dbx_rc; }}; \
__dbx_done 0 ready\n"
    )
}

/// Quotes `s` as one bash word.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub(crate) struct ShellPipes {
    pub stdin: std::fs::File,
    pub stdout: std::fs::File,
    pub stderr: std::fs::File,
    pub marker: std::fs::File,
    marker_buf: Vec<u8>,
}

fn set_nonblock(f: &std::fs::File) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fl = fcntl(f.as_raw_fd(), FcntlArg::F_GETFL).unwrap_or(0);
    let _ = fcntl(
        f.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK),
    );
}

/// What ended a wait on the shell.
pub(crate) enum Wait {
    Marker(i32),
    Timeout,
    /// The marker pipe closed: the shell and everything in the sandbox is gone.
    Closed,
    /// The control socket became readable (an event from init, e.g. the shell exited).
    Control,
}

pub(crate) struct Sink {
    pub out: Vec<u8>,
    pub total: u64,
    cap: usize,
}

impl Sink {
    pub fn new(cap: usize) -> Self {
        Sink {
            out: Vec::new(),
            total: 0,
            cap,
        }
    }
    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.cap.saturating_sub(self.out.len());
        self.out.extend_from_slice(&data[..data.len().min(room)]);
    }
    pub fn truncated(&self) -> bool {
        self.total > self.out.len() as u64
    }
}

impl ShellPipes {
    pub fn new(stdin: OwnedFd, stdout: OwnedFd, stderr: OwnedFd, marker: OwnedFd) -> Self {
        let p = ShellPipes {
            stdin: stdin.into(),
            stdout: stdout.into(),
            stderr: stderr.into(),
            marker: marker.into(),
            marker_buf: Vec::new(),
        };
        set_nonblock(&p.stdout);
        set_nonblock(&p.stderr);
        set_nonblock(&p.marker);
        p
    }

    pub fn send(&mut self, line: &str) -> Result<(), SandboxError> {
        self.stdin
            .write_all(line.as_bytes())
            .map_err(|e| SandboxError::Io(format!("write to the sandbox shell: {e}")))
    }

    /// Reads output into the sinks until the marker `tag` arrives, the deadline passes,
    /// the shell's pipes close, or `control` becomes readable.
    pub fn wait(
        &mut self,
        tag: &str,
        deadline: Option<Instant>,
        control: &OwnedFd,
        out: &mut Sink,
        err: &mut Sink,
    ) -> Wait {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            if let Some(code) = self.take_marker(tag) {
                self.drain(out, err);
                return Wait::Marker(code);
            }
            let timeout = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Wait::Timeout;
                    }
                    PollTimeout::try_from(left.as_millis().min(60_000) as u64 + 1)
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = [
                PollFd::new(self.stdout.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.stderr.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.marker.as_fd(), PollFlags::POLLIN),
                PollFd::new(control.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Err(nix::Error::EINTR) | Ok(0) => continue,
                Err(_) => return Wait::Closed,
                Ok(_) => {}
            }
            let ev: Vec<PollFlags> = fds
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            let readable = |i: usize| {
                ev[i].intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            };
            if readable(0) {
                read_into(&mut self.stdout, &mut buf, out);
            }
            if readable(1) {
                read_into(&mut self.stderr, &mut buf, err);
            }
            if readable(2) {
                match self.marker.read(&mut buf) {
                    Ok(0) => {
                        if self.take_marker(tag).is_none() {
                            self.drain(out, err);
                            return Wait::Closed;
                        }
                    }
                    Ok(n) => self.marker_buf.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return Wait::Closed,
                }
            }
            if readable(3) && self.take_marker(tag).is_none() {
                self.drain(out, err);
                return Wait::Control;
            }
        }
    }

    /// Output written before the marker is already in the pipes; collect it.
    fn drain(&mut self, out: &mut Sink, err: &mut Sink) {
        let mut buf = vec![0u8; 1 << 16];
        while read_into(&mut self.stdout, &mut buf, out) {}
        while read_into(&mut self.stderr, &mut buf, err) {}
    }

    /// Finds the marker line for `tag`, dropping stale markers of earlier commands.
    fn take_marker(&mut self, tag: &str) -> Option<i32> {
        while let Some(nl) = self.marker_buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.marker_buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let mut parts = line.trim_start_matches('\u{1e}').trim().split(' ');
            if parts.next() != Some("DBX") {
                continue;
            }
            if parts.next() == Some(tag) {
                return Some(parts.next().and_then(|c| c.parse().ok()).unwrap_or(-1));
            }
        }
        None
    }

    /// Discards anything pending (prompt noise after a restart).
    pub fn discard(&mut self) {
        let mut s1 = Sink::new(0);
        let mut s2 = Sink::new(0);
        self.drain(&mut s1, &mut s2);
    }
}

/// Reads what is available; returns whether anything was read.
fn read_into(f: &mut std::fs::File, buf: &mut [u8], sink: &mut Sink) -> bool {
    match f.read(buf) {
        Ok(0) => false,
        Ok(n) => {
            sink.push(&buf[..n]);
            true
        }
        Err(_) => false,
    }
}

pub(crate) fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

pub(crate) const GRACE: Duration = Duration::from_millis(300);
