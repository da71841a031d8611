//! The Python SDK (`python/`): pip-installed into a fresh virtualenv with mini-swe-agent,
//! then its unittest suite (SDK, search, mini-swe-agent environment) runs against a
//! private daemon that the SDK itself starts.

mod common;
use std::process::Command;

#[test]
fn python_sdk_installs_with_pip_and_passes_its_tests() {
    let store = common::Store::new(4 << 30);
    let dir = store.dir.path();
    let venv = dir.join("venv");
    let ok = |what: &str, c: &mut Command| {
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "{what}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    };
    ok(
        "venv",
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
    );
    let py = venv.join("bin/python");
    let sdk = concat!(env!("CARGO_MANIFEST_DIR"), "/../../python");
    ok(
        "pip install",
        Command::new(&py)
            .args(["-m", "pip", "install", "-q"])
            .arg(sdk),
    );
    // mini-swe-agent without its model/UI stack (litellm, datasets, textual: hundreds of
    // MB the environment and the deterministic test model never import).
    ok(
        "pip install mini-swe-agent's core dependencies",
        Command::new(&py)
            .args(["-m", "pip", "install", "-q"])
            .args([
                "pydantic>=2",
                "jinja2",
                "pyyaml",
                "python-dotenv",
                "platformdirs",
                "rich",
            ]),
    );
    ok(
        "pip install mini-swe-agent",
        Command::new(&py).args([
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "mini-swe-agent==2.4.6",
        ]),
    );
    let socket = dir.join("sdk.sock");
    let out = ok(
        "unittest",
        Command::new(&py)
            .args([
                "-m",
                "unittest",
                "-v",
                "test_sdk",
                "test_search",
                "test_mini_swe_agent",
            ])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../python/tests"))
            .env("DELTABOX_BIN", common::BIN)
            .env("DELTABOX_SOCKET", &socket)
            .env("DELTABOX_ROOT", &store.root)
            .env("DELTABOX_LOG", dir.join("daemon.log")),
    );
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        report.contains("Ran 26 tests") && report.contains("OK"),
        "{report}"
    );
    // Stop the daemon the SDK started (by its pid: other tests run daemons too).
    let pid = ok(
        "daemon pid",
        Command::new(&py)
            .args([
                "-c",
                "import deltabox; print(deltabox.Client(start=False).health()['pid'])",
            ])
            .env("DELTABOX_SOCKET", &socket),
    );
    let pid: i32 = String::from_utf8_lossy(&pid.stdout).trim().parse().unwrap();
    // SAFETY: kill(2) on the daemon this test caused to start.
    unsafe { libc::kill(pid, libc::SIGTERM) };
}
