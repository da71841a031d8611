//! `deltabox bench --quick` end to end: builds (or reuses) the Django workload from PyPI,
//! measures DeltaBox and the baselines, and writes the report. The bench verifies every
//! restore it times (heap and files), so a wrong restore fails this test. Then the
//! README's demo (`scripts/demo.py`) on the same workload: its search must find the fix.

mod common;
use std::process::Command;

#[test]
fn quick_bench_measures_everything_and_writes_the_report() {
    let report = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_deltabox"))
        .args([
            "--json",
            "bench",
            "--quick",
            "--reps",
            "5",
            "--baseline-reps",
            "1",
            "--report",
        ])
        .arg(report.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = &r["workload"];
    assert!(w["files"].as_u64().unwrap() >= 6000, "{w}");
    assert!(w["bytes"].as_u64().unwrap() >= 300 << 20, "{w}");
    let d = &r["deltabox"];
    assert!(d["repl_rss_bytes"].as_u64().unwrap() >= 60 << 20);
    for op in [
        "checkpoint",
        "checkpoint_small_pages",
        "restore",
        "rollback",
        "diff",
        "gc",
        "replay",
    ] {
        let s = &d[op]["summary"];
        assert!(s["n"].as_u64().unwrap() >= 1, "{op}: {s}");
        assert!(s["p50"].as_f64().unwrap() > 0.0, "{op}: {s}");
        assert!(s["p99"].as_f64() >= s["p50"].as_f64(), "{op}: {s}");
    }
    // A template shares its pages: rewriting 10 MB in the live REPL moves ~10 MB into
    // the template's private memory.
    let private = |k: &str| d[k]["private"].as_u64().unwrap();
    let grew = private("template_after_dirty_10mb") - private("template_after_checkpoint");
    assert!((9 << 20..=16 << 20).contains(&grew), "{grew}");
    let f = &d["fork"];
    assert!(f["children"].as_u64().unwrap() >= 16, "{f}");
    assert_eq!(f["verified"], f["children"].as_u64().unwrap() * 2);
    for kind in ["cold", "warm"] {
        assert_eq!(f[kind]["summary"]["n"], f["children"], "{f}");
        assert!(f[kind]["summary"]["p50"].as_f64().unwrap() > 0.0, "{f}");
    }
    let search = r["search"].as_array().unwrap();
    assert_eq!(search[0]["system"], "DeltaBox");
    assert!(search[0]["expansions"].as_u64().unwrap() >= 100);
    assert!(search[0]["rollbacks"].as_u64().unwrap() >= 40);
    assert!(search
        .iter()
        .any(|s| s["system"].as_str().unwrap().starts_with("copytree")));
    let names: Vec<&str> = r["baselines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("CRIU")), "{names:?}");
    for f in [
        "report.md",
        "report.json",
        "checkpoint_cdf.png",
        "restore_cdf.png",
    ] {
        let p = report.path().join(f);
        assert!(
            std::fs::metadata(&p)
                .map(|m| m.len() > 1000)
                .unwrap_or(false),
            "{f}"
        );
    }
    let md = std::fs::read_to_string(report.path().join("report.md")).unwrap();
    assert!(
        md.contains("Tree-search overhead") && md.contains("DeltaBox fork, from a warm pool"),
        "{md}"
    );
    demo_search_finds_the_fix();
}

/// The demo after the bench, not beside it: both use the workload (built on first use).
fn demo_search_finds_the_fix() {
    let store = common::Store::new(4 << 30);
    let dir = &store.dir;
    let bin = common::BIN;
    let wl = Command::new(bin)
        .args(["--json", "bench", "--workload-only"])
        .output()
        .unwrap();
    assert!(
        wl.status.success(),
        "{}",
        String::from_utf8_lossy(&wl.stderr)
    );
    let wl_json = dir.path().join("workload.json");
    std::fs::write(&wl_json, &wl.stdout).unwrap();
    let venv = dir.path().join("venv");
    let run = |c: &mut Command| {
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "{c:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    let py = venv.join("bin/python");
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    run(Command::new(&py)
        .args(["-m", "pip", "install", "-q"])
        .arg(format!("{repo}/python")));
    let out = run(Command::new(&py)
        .arg(format!("{repo}/scripts/demo.py"))
        .arg(&wl_json)
        .env("DELTABOX_BIN", bin)
        .env("DELTABOX_SOCKET", dir.path().join("d.sock"))
        .env("DELTABOX_ROOT", &store.root)
        .env("DELTABOX_LOG", dir.path().join("daemon.log")));
    assert!(out.contains("solved: best score 1.000"), "{out}");
    assert!(
        out.contains("[:-1]),") && out.contains("value.lower())"),
        "{out}"
    );
    let health = run(Command::new(&py)
        .args([
            "-c",
            "import deltabox; print(deltabox.Client(start=False).health()['pid'])",
        ])
        .env("DELTABOX_SOCKET", dir.path().join("d.sock")));
    // SAFETY: kill(2) on the daemon the demo's SDK started for this test.
    unsafe { libc::kill(health.trim().parse().unwrap(), libc::SIGTERM) };
}
