//! `deltabox bench`: DeltaBox and the baselines measured in one run, on one real workload
//! (Django from PyPI as a git checkout with a virtualenv, and a Python REPL that imported
//! it), so that the ratios hold on a noisy machine.
//!
//! * [`workload`]: builds (once) and describes the workload.
//! * [`deltabox`]: checkpoint / restore / diff latencies and template memory, in-process
//!   against a private layer store.
//! * [`baselines`]: what users do today (copytree, a docker-commit-like tar of the
//!   changed files) on the same tree.

pub mod baselines;
pub mod deltabox;
pub mod stats;
pub mod workload;

use serde::Serialize;
use std::path::PathBuf;

pub use stats::{summarize, Summary};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("building the workload failed: {0}")]
    Workload(String),
    #[error(transparent)]
    Sandbox(#[from] deltabox_sandbox::SandboxError),
    #[error("{what}: {why}")]
    Step { what: String, why: String },
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
    /// Called with a line of progress now and then.
    pub progress: Box<dyn Fn(&str) + Send + Sync>,
}

impl Options {
    pub fn new(quick: bool, dir: PathBuf, init_exe: PathBuf) -> Self {
        Options {
            quick,
            reps: if quick { 20 } else { 100 },
            baseline_reps: if quick { 2 } else { 10 },
            dir,
            init_exe,
            progress: Box::new(|_| {}),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: workload::Workload,
    pub deltabox: deltabox::Figures,
    pub baselines: Vec<baselines::Baseline>,
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
    let baselines = baselines::measure(opts, &wl)?;
    Ok(Report {
        workload: wl,
        deltabox: figures,
        baselines,
    })
}

/// Milliseconds since `t`.
pub(crate) fn ms(t: std::time::Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}
