//! `deltabox bench`: DeltaBox and the baselines measured in one run, on one real workload
//! (Django from PyPI as a git checkout with a virtualenv, and a Python REPL that imported
//! it), so that the ratios hold on a noisy machine.
//!
//! * [`workload`]: builds (once) and describes the workload.
//! * [`deltabox`]: checkpoint / restore / diff / gc latencies, template memory, storage,
//!   data-path overhead and a replayed tree search, in-process on a private store.
//! * [`baselines`]: what users do today (copytree, a docker-commit-like tar of the
//!   changed files, CRIU when available) on the same tree.
//! * [`search`]: the tree-search overhead of each system against an LLM latency model.
//! * [`report`]: `--report DIR`: markdown and PNG latency CDFs.

pub mod baselines;
pub mod deltabox;
pub mod report;
pub mod search;
pub mod stats;
pub mod workload;

use serde::Serialize;
use std::path::PathBuf;

pub use stats::{summarize, Series, Summary};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("building the workload failed: {0}")]
    Workload(String),
    #[error(transparent)]
    Sandbox(#[from] deltabox_sandbox::SandboxError),
    #[error("{what}: {why}")]
    Step { what: String, why: String },
}

impl BenchError {
    /// A step of the bench failed: what it was doing, and why.
    pub(crate) fn step(what: impl Into<String>, why: impl std::fmt::Display) -> Self {
        BenchError::Step {
            what: what.into(),
            why: why.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, BenchError>;

pub struct Options {
    /// Fewer repetitions, for a smoke run (the workload is the same).
    pub quick: bool,
    /// Repetitions of each DeltaBox operation.
    pub reps: usize,
    /// Repetitions of each (slow) baseline operation.
    pub baseline_reps: usize,
    /// Where the workload and the bench's private layer store live.
    pub dir: PathBuf,
    /// The `deltabox` binary (sandboxes run its `__init`).
    pub init_exe: PathBuf,
    /// LLM latency model for the search overhead: uniform in [min, max] seconds.
    pub llm_s: (f64, f64),
    /// Called with a line of progress now and then.
    pub progress: Box<dyn Fn(&str) + Send + Sync>,
}

impl Options {
    pub fn new(quick: bool, dir: PathBuf, init_exe: PathBuf) -> Self {
        Options {
            quick,
            reps: if quick { 20 } else { 100 },
            baseline_reps: if quick { 1 } else { 50 },
            dir,
            init_exe,
            llm_s: (1.0, 20.0),
            progress: Box::new(|_| {}),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub quick: bool,
    pub workload: workload::Workload,
    pub deltabox: deltabox::Figures,
    pub baselines: Vec<baselines::Baseline>,
    pub search: Vec<search::Row>,
    pub llm_s: (f64, f64),
}

pub fn run(opts: &Options) -> Result<Report> {
    (opts.progress)("building or reusing the workload (Django from PyPI)");
    let wl = workload::ensure(&opts.dir)?;
    (opts.progress)(&format!(
        "workload: {} files, {:.0} MB in {}",
        wl.files,
        wl.bytes as f64 / 1e6,
        wl.repo.display()
    ));
    let figures = deltabox::measure(opts, &wl)?;
    let mut baselines = baselines::measure(opts, &wl)?;
    baselines.insert(0, overlay_remount(&figures));
    let search = search::overheads(&figures, &baselines, opts.llm_s);
    Ok(Report {
        quick: opts.quick,
        workload: wl,
        deltabox: figures,
        baselines,
        search,
        llm_s: opts.llm_s,
    })
}

/// The overlayfs-remount baseline is DeltaBox without its process templates: the same
/// checkpoint, a files-only restore (fresh REPL) plus the replay of the REPL.
fn overlay_remount(d: &deltabox::Figures) -> baselines::Baseline {
    baselines::Baseline {
        name: "overlayfs remount, no process state".into(),
        checkpoint: Some(d.checkpoint.clone()),
        restore: Some(d.files_only_restore.clone()),
        needs_replay: true,
        note: "DeltaBox's files-only restore (new overlay mount, fresh REPL); restoring also replays the REPL".into(),
    }
}

/// Milliseconds since `t`.
pub(crate) fn ms(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}
