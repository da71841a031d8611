//! The daemon's side of the persistent shell: bash reads commands from a pipe and reports
//! each command's end on a marker pipe, so its state (cwd, env, variables, functions)
//! lives on between executions.

use crate::protocol::SHELL_MARKER_FD;
use crate::SandboxError;
use deltabox_layerstore::ShellKind;
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
/// and keeps `$?` as the user's.
fn bash_prelude(marker_fd: i32) -> String {
    format!(
        "PS1= PS2= PS4= PROMPT_COMMAND=; set +H +o history; unset HISTFILE; \
__dbx_done() {{ printf '\\036DBX %s %s\\n' \"$2\" \"$1\" >&{marker_fd}; return \"$1\"; }}; \
__dbx_done 0 ready\n"
    )
}

/// The Python session: reads `[tag, source]` JSON lines (or `[tag, null, code]`: just
/// report `code`), evaluates an expression (printing its repr, like a REPL) or executes
/// statements in one persistent namespace, and reports the end on the marker fd. The
/// protocol pipe moves to fd 1020 so that user code (and its subprocesses) reads
/// /dev/null on stdin.
const PYTHON_DRIVER: &str = r#"
import json, os, sys, traceback
_in = os.fdopen(os.dup2(0, 1020, inheritable=False), 'rb', buffering=0)
_nul = os.open(os.devnull, os.O_RDONLY)
os.dup2(_nul, 0)
os.close(_nul)
sys.stdin = open(0, closefd=False)
_ns = {'__name__': '__main__', '__builtins__': __builtins__}
def _done(tag, code):
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            pass
    os.write(MARKER, ('\x1eDBX %s %d\n' % (tag, code)).encode())
def _run(src):
    try:
        code = compile(src, '<deltabox>', 'eval')
    except SyntaxError:
        exec(compile(src, '<deltabox>', 'exec'), _ns)
        return
    value = eval(code, _ns)
    if value is not None:
        print(repr(value))
def _report(e):
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == '<string>':
        tb = tb.tb_next
    traceback.print_exception(type(e), e, tb)
while True:
    try:
        line = _in.readline()
        if not line:
            break
        req = json.loads(line)
        if req[1] is None:
            _done(req[0], req[2])
            continue
        rc = 0
        try:
            _run(req[1])
        except SystemExit:
            raise
        except KeyboardInterrupt as e:
            _report(e)
            rc = 130
        except BaseException as e:
            _report(e)
            rc = 1
        _done(req[0], rc)
    except KeyboardInterrupt:
        continue
"#;

/// How the daemon talks to one kind of session.
pub(crate) trait Session {
    /// The program and its arguments, inside the sandbox.
    fn argv(&self) -> Vec<String>;
    /// Sent once after start; the session answers with the marker `ready`.
    fn prelude(&self) -> String;
    /// Runs `command`, then reports its status under `tag`.
    fn run_line(&self, command: &str, tag: &str) -> String;
    /// Only reports `code` under `tag` (after an interrupted command).
    fn done_line(&self, code: i32, tag: &str) -> String;
}

impl Session for ShellKind {
    fn argv(&self) -> Vec<String> {
        match self {
            ShellKind::Bash => ["/bin/bash", "--noediting", "--norc", "--noprofile", "-i"]
                .map(String::from)
                .to_vec(),
            ShellKind::Python => vec![
                PYTHON.into(),
                "-u".into(),
                "-c".into(),
                PYTHON_DRIVER.replace("MARKER", &SHELL_MARKER_FD.to_string()),
            ],
        }
    }
    fn prelude(&self) -> String {
        match self {
            ShellKind::Bash => bash_prelude(SHELL_MARKER_FD),
            ShellKind::Python => self.done_line(0, "ready"),
        }
    }
    fn run_line(&self, command: &str, tag: &str) -> String {
        match self {
            ShellKind::Bash => format!(
                "eval -- {} </dev/null; __dbx_done $? {tag}\n",
                quote(command)
            ),
            ShellKind::Python => format!("{}\n", serde_json::json!([tag, command])),
        }
    }
    fn done_line(&self, code: i32, tag: &str) -> String {
        match self {
            ShellKind::Bash => format!("__dbx_done {code} {tag}\n"),
            ShellKind::Python => format!("{}\n", serde_json::json!([tag, null, code])),
        }
    }
}

/// Where a base must have Python for `--shell python`.
pub const PYTHON: &str = "/usr/bin/python3";

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

    /// Discards anything pending (prompt noise after a restart, output and markers of a
    /// shell that a restore replaced).
    pub fn discard(&mut self) {
        let mut s1 = Sink::new(0);
        let mut s2 = Sink::new(0);
        self.drain(&mut s1, &mut s2);
        let mut buf = [0u8; 4096];
        while matches!(self.marker.read(&mut buf), Ok(n) if n > 0) {}
        self.marker_buf.clear();
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
