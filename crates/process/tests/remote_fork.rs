//! Real ptrace: checkpoint a Python process blocked in read(), change it, restore it
//! from its template several times. Needs root (CAP_SYS_PTRACE).

use deltabox_process::{checkpoint, Context};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

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

fn root_mount_id() -> u64 {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

struct Session {
    to: std::fs::File,
    from: BufReader<std::fs::File>,
}

impl Session {
    fn ask(&mut self, line: &str) -> String {
        self.to.write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut s = String::new();
        self.from.read_line(&mut s).unwrap();
        s.trim().to_string()
    }
}

#[test]
fn template_restores_heap_cwd_and_files_many_times() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
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
    let mut child = cmd
        .args(["-c", REPL])
        .current_dir(dir.path())
        .stdin(Stdio::from(in_r))
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut s = Session {
        to: in_w.into(),
        from: BufReader::new(out_r.into()),
    };
    s.ask("big = bytes(range(256)) * (40 << 12)"); // 40 MiB
    s.ask(&format!("f = open({:?}, 'a+')", log.display().to_string()));
    s.ask("f.write('one\\n'); f.flush()");
    s.ask("x = 41");
    let ctx = Context {
        root_mnt: root_mount_id(),
        session_pipes: &pipes,
    };
    let live = Pid::from_raw(child.id() as i32);
    let t0 = std::time::Instant::now();
    let (mut tmpl, mv) = checkpoint(live, &ctx).expect("checkpoint");
    assert_eq!(mv.finish().unwrap(), live);
    // Reported, not asserted: speed is the benchmark's business.
    eprintln!("checkpoint of a 40 MiB process: {:?}", t0.elapsed());
    assert_eq!(s.ask("x"), "41");
    s.ask("x = 0; big = None; f.write('two\\n'); f.flush(); os.chdir('/')");
    assert_eq!(s.ask("os.getcwd()"), "'/'");
    child.kill().unwrap();
    child.wait().unwrap();
    for _ in 0..3 {
        let t1 = std::time::Instant::now();
        let copy = tmpl.spawn().unwrap().finish().unwrap();
        eprintln!("restore (fork of the template): {:?}", t1.elapsed());
        assert_eq!(s.ask("x"), "41");
        assert_eq!(s.ask("len(big)"), (40usize << 20).to_string());
        assert_eq!(
            s.ask("os.getcwd()"),
            format!("{:?}", dir.path().display().to_string()).replace('"', "'")
        );
        // The file was reopened at its checkpoint offset: the copy's writes land after "one".
        s.ask("f.seek(0); data = f.read()");
        assert_eq!(s.ask("data"), "'one\\ntwo\\n'");
        assert_eq!(s.ask("f.tell()"), "8");
        s.ask("x = 7");
        nix::sys::signal::kill(copy, nix::sys::signal::Signal::SIGKILL).unwrap();
        nix::sys::wait::waitpid(copy, None).unwrap();
    }
    tmpl.kill();
}
