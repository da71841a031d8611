//! The bench's human output: a table (terminal and markdown), and `--report DIR` with
//! PNG latency CDFs drawn by matplotlib from the workload's virtualenv.

use crate::{BenchError, Report, Result, Series};
use std::fmt::Write;
use std::path::Path;

const PLOT: &str = include_str!("plot.py");

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

fn line(out: &mut String, name: &str, s: Option<&Series>) {
    match s {
        Some(s) => {
            let m = &s.summary;
            let _ = writeln!(
                out,
                "| {name} | {} | {:.2} | {:.2} | {:.2} |",
                m.n, m.p50, m.p90, m.p99
            );
        }
        None => {
            let _ = writeln!(out, "| {name} | - | n/a | | |");
        }
    }
}

/// A restore that keeps no process state, plus bringing the REPL back (pairs the
/// samples in order, cycling through the replays).
pub fn with_replay(restore: &Series, replay: &Series) -> Option<Series> {
    let n = replay.samples.len().max(1);
    Series::new(
        restore
            .samples
            .iter()
            .enumerate()
            .map(|(i, x)| x + replay.samples.get(i % n).copied().unwrap_or(0.0))
            .collect(),
    )
}

/// The results as markdown tables (also what the terminal shows).
pub fn table(r: &Report) -> String {
    let mut o = String::new();
    let w = &r.workload;
    let d = &r.deltabox;
    let _ = writeln!(
        o,
        "Workload: Django {} from PyPI as a git checkout with a virtualenv: {} files, {}; the sandbox's Python REPL imported Django and holds {} RSS.{}\n",
        w.versions.join(", "),
        w.files,
        mb(w.bytes),
        mb(d.repl_rss_bytes),
        if r.quick { " (--quick: fewer repetitions)" } else { "" }
    );
    let _ = writeln!(
        o,
        "| operation (ms) | n | p50 | p90 | p99 |\n|---|---|---|---|---|"
    );
    line(
        &mut o,
        "DeltaBox checkpoint (files + REPL), back to back",
        Some(&d.checkpoint),
    );
    line(
        &mut o,
        "DeltaBox checkpoint, same steps on a REPL with huge pages off (interleaved)",
        Some(&d.checkpoint_small_pages),
    );
    line(
        &mut o,
        "DeltaBox restore, random node, back to back",
        Some(&d.restore),
    );
    line(
        &mut o,
        &format!("DeltaBox rollback after {} ms think time", d.think_ms),
        Some(&d.rollback),
    );
    line(
        &mut o,
        "DeltaBox diff, consecutive checkpoints",
        Some(&d.diff),
    );
    line(&mut o, "DeltaBox remove checkpoint + gc", Some(&d.gc));
    line(
        &mut o,
        "REPL replay (import Django, rebuild heap)",
        Some(&d.replay),
    );
    for b in &r.baselines {
        line(
            &mut o,
            &format!("{} checkpoint", b.name),
            b.checkpoint.as_ref(),
        );
        match (&b.restore, b.needs_replay) {
            (Some(rs), true) => line(
                &mut o,
                &format!("{} restore + REPL replay", b.name),
                with_replay(rs, &d.replay).as_ref(),
            ),
            (rs, _) => line(&mut o, &format!("{} restore", b.name), rs.as_ref()),
        }
    }
    let f = &d.fork;
    let copy = r
        .baselines
        .iter()
        .find(|b| b.name.starts_with("copytree"))
        .and_then(|b| with_replay(b.restore.as_ref()?, &d.replay));
    let _ = writeln!(
        o,
        "\nFork of {} children from one checkpoint (REPL state of every child verified):\n",
        f.children
    );
    let _ = writeln!(
        o,
        "| per child (ms) | n | p50 | p90 | p99 | total for all (ms) |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    for (name, s, total) in [
        ("DeltaBox fork, cold", &f.cold, f.cold_total_ms),
        ("DeltaBox fork, from a warm pool", &f.warm, f.warm_total_ms),
    ] {
        let x = &s.summary;
        let _ = writeln!(
            o,
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.1} |",
            x.n, x.p50, x.p90, x.p99, total
        );
    }
    if let Some(c) = copy {
        let _ = writeln!(
            o,
            "| copytree + REPL replay per rollout (same run) | {} | {:.2} | {:.2} | {:.2} | {:.0} (est. {} x p50) |",
            c.summary.n,
            c.summary.p50,
            c.summary.p90,
            c.summary.p99,
            c.summary.p50 * f.children as f64,
            f.children
        );
    }
    let _ = writeln!(
        o,
        "\nWarm pool of {} filled in {:.0} ms (in the background). Memory added per child: {} (host MemAvailable drop / children).\n",
        f.children,
        f.pool_fill_ms,
        mb(f.added_bytes_per_child)
    );
    let l = &d.lineage;
    let _ = writeln!(
        o,
        "Long lineage: {} rounds of step, checkpoint, restore it, {} ms think, every checkpoint kept (the shell a fork of a fork each round); first and last {} rounds:\n",
        l.rounds,
        l.think_ms,
        l.rerooted.first_checkpoint.summary.n
    );
    let _ = writeln!(
        o,
        "| (ms, p50 / p99) | checkpoint, first | checkpoint, last | restore, first | restore, last | templates' private memory at the end |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    for (name, run) in [
        ("DeltaBox, re-rooting in idle time", &l.rerooted),
        ("DeltaBox, re-rooting off", &l.not_rerooted),
    ] {
        let c = |s: &crate::Series| format!("{:.2} / {:.2}", s.summary.p50, s.summary.p99);
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {} | {} |",
            c(&run.first_checkpoint),
            c(&run.last_checkpoint),
            c(&run.first_restore),
            c(&run.last_restore),
            mb(run.templates_private_bytes)
        );
    }
    let _ = writeln!(o);
    let mem = |m: &crate::deltabox::Memory| {
        format!(
            "rss {}, pss {}, private {}",
            mb(m.rss),
            mb(m.pss),
            mb(m.private)
        )
    };
    let _ = writeln!(
        o,
        "Template memory: right after checkpoint {}; after the live REPL rewrote 10 MB {}.",
        mem(&d.template_after_checkpoint),
        mem(&d.template_after_dirty_10mb)
    );
    let st = &d.storage;
    let _ = writeln!(
        o,
        "Storage: {} checkpoints used {} of layer store for {} changed ({:.1}x; copy-up copies whole files).",
        st.checkpoints,
        mb(st.bytes_used),
        mb(st.bytes_changed),
        st.bytes_used as f64 / st.bytes_changed.max(1) as f64
    );
    let dp = &d.data_path;
    let _ = writeln!(
        o,
        "Data path: Django `runtests.py {}` p50 {:.0} ms in the sandbox vs {:.0} ms on the host: {:.3}x (goal <= 1.05x).\n",
        dp.test_slice,
        dp.sandbox.median(),
        dp.host.median(),
        dp.ratio
    );
    let _ = writeln!(
        o,
        "Tree-search overhead (LLM latency uniform in {}–{} s per expansion):\n\n| system | expansions | rollbacks | state mgmt (s) | LLM floor (s) | total / floor |\n|---|---|---|---|---|---|",
        r.llm_s.0, r.llm_s.1
    );
    for s in &r.search {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.2} | {:.0} | {:.4}x |",
            s.system,
            s.expansions,
            s.rollbacks,
            s.state_ms / 1000.0,
            s.llm_floor_ms / 1000.0,
            s.overhead
        );
    }
    let _ = writeln!(o);
    for b in &r.baselines {
        let _ = writeln!(o, "* {}: {}", b.name, b.note);
    }
    o
}

/// Writes DIR/report.md, DIR/report.json and the PNG plots.
pub fn write(r: &Report, dir: &Path) -> Result<()> {
    let err = |what: &str, e: String| BenchError::step(format!("write the report: {what}"), e);
    std::fs::create_dir_all(dir).map_err(|e| err("create dir", e.to_string()))?;
    let json = serde_json::to_string(r).expect("report serializes");
    std::fs::write(dir.join("report.json"), &json)
        .map_err(|e| err("report.json", e.to_string()))?;
    let script = dir.join("plot.py");
    std::fs::write(&script, PLOT).map_err(|e| err("plot.py", e.to_string()))?;
    let out = std::process::Command::new(&r.workload.python)
        .arg(&script)
        .arg(dir.join("report.json"))
        .arg(dir)
        .output()
        .map_err(|e| err("run matplotlib", e.to_string()))?;
    if !out.status.success() {
        return Err(err(
            "plots",
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    let _ = std::fs::remove_file(&script);
    let md = format!(
        "# deltabox bench\n\n{}\n![checkpoint latency CDF](checkpoint_cdf.png)\n\n![restore latency CDF](restore_cdf.png)\n",
        table(r)
    );
    std::fs::write(dir.join("report.md"), md).map_err(|e| err("report.md", e.to_string()))
}
