//! Real ptrace: checkpoint a Python process blocked in read(), change it, restore it
//! from its template several times. Needs root (CAP_SYS_PTRACE).

mod common;

use common::root_mount_id;
use deltabox_process::{checkpoint, Context};
use nix::unistd::Pid;

#[test]
fn template_restores_heap_cwd_and_files_many_times() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (mut child, mut s, pipes) = common::spawn_repl(dir.path());
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
