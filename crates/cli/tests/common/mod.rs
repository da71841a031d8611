//! Test harness: a private layer store (its own loop-mounted image), a daemon on a
//! private socket, and helpers to run the real `deltabox` binary against it.
#![allow(dead_code)]

use deltabox_sandbox::{Manager, Paths};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_deltabox");

/// A private store root, loop-mounted on a sparse image; unmounted on drop.
pub struct Store {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Store {
    pub fn new(image_bytes: u64) -> Store {
        let dir = tempfile::Builder::new()
            .prefix("dbx-test-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let root = dir.path().join("root");
        deltabox_sandbox::storefs::prepare(&root, image_bytes).expect("prepare store filesystem");
        Store { dir, root }
    }

    pub fn manager(&self) -> Manager {
        Manager::open(Paths {
            root: self.root.clone(),
            init_exe: PathBuf::from(BIN),
            hidden: vec![],
        })
        .expect("open manager")
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = Command::new("umount")
                .arg(&self.root)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A daemon on a private socket and store, driven through the CLI binary.
pub struct Daemon {
    pub store: Store,
    pub socket: PathBuf,
    pub child: Option<Child>,
    /// Extra environment of the daemon process.
    pub env: Vec<(String, String)>,
}

impl Daemon {
    pub fn start(image_bytes: u64) -> Daemon {
        Daemon::start_with_env(image_bytes, &[])
    }

    pub fn start_with_env(image_bytes: u64, env: &[(&str, &str)]) -> Daemon {
        let store = Store::new(image_bytes);
        let socket = store.dir.path().join("run/d.sock");
        let mut d = Daemon {
            store,
            socket,
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.spawn();
        d
    }

    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.store.dir.path().join("daemon.log")).unwrap();
        let child = Command::new(BIN)
            .arg("daemon")
            .env("DELTABOX_ROOT", &self.store.root)
            .env("DELTABOX_SOCKET", &self.socket)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "daemon did not start: {}",
            std::fs::read_to_string(self.store.dir.path().join("daemon.log")).unwrap_or_default()
        );
    }

    /// SIGKILL: the crash case.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("DELTABOX_ROOT", &self.store.root)
            .env("DELTABOX_SOCKET", &self.socket)
            .output()
            .unwrap()
    }

    /// Runs `deltabox --json ARGS`, expecting success, and parses the output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.cmd(&a);
        // `exec` exits with the command's code and still prints its JSON result.
        let exec_ok = args.first() == Some(&"exec") && out.stdout.starts_with(b"{");
        assert!(
            out.status.success() || exec_ok,
            "deltabox {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "bad JSON from {args:?}: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs a command in a sandbox; returns (stdout, exit code).
    pub fn sh(&self, sb: &str, command: &str) -> (String, i64) {
        let v = self.json(&["exec", sb, "--", command]);
        (
            v["stdout"].as_str().unwrap().to_string(),
            v["exit_code"].as_i64().unwrap(),
        )
    }

    /// Ids of the sandboxes `ls` lists.
    pub fn ids(&self) -> Vec<String> {
        self.json(&["ls"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn create(&self) -> String {
        self.json(&["create"])["id"].as_str().unwrap().to_string()
    }

    pub fn checkpoint(&self, sb: &str) -> String {
        self.json(&["checkpoint", sb])["id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: sending SIGTERM to our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` every 100 ms until it holds; fails the test, naming `what`, after `within`.
pub fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}
