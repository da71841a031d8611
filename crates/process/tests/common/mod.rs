//! A Python REPL on pipes, blocked in read() between requests: what the tests capture.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

const REPL: &str = r#"
import sys, os
ns = {"os": os}
while True:
    line = sys.stdin.readline()
    if not line:
        break
    try:
        r = eval(line, ns)
    except SyntaxError:
        exec(line, ns); r = None
    print(repr(r), flush=True)
"#;

pub fn root_mount_id() -> u64 {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

pub struct Session {
    to: std::fs::File,
    from: BufReader<std::fs::File>,
}

impl Session {
    pub fn ask(&mut self, line: &str) -> String {
        self.to.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut s = String::new();
        self.from.read_line(&mut s).unwrap();
        s.trim().to_string()
    }
}

/// A REPL running in `dir`, and its pipes' inodes (the session pipes of a [`Context`]).
///
/// [`Context`]: deltabox_process::Context
pub fn spawn_repl(dir: &std::path::Path) -> (Child, Session, [u64; 2]) {
    let (in_r, in_w) = nix::unistd::pipe().unwrap();
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let pipes = [
        std::fs::File::from(in_r.try_clone().unwrap())
            .metadata()
            .unwrap()
            .ino(),
        std::fs::File::from(out_r.try_clone().unwrap())
            .metadata()
            .unwrap()
            .ino(),
    ];
    let mut cmd = Command::new("python3");
    // SAFETY: close_range is async-signal-safe; descriptors a test harness leaks
    // (an inherited pipe, for instance) would otherwise make the process uncapturable.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    let child = cmd
        .args(["-c", REPL])
        .current_dir(dir)
        .stdin(Stdio::from(in_r))
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let s = Session {
        to: in_w.into(),
        from: BufReader::new(out_r.into()),
    };
    (child, s, pipes)
}
