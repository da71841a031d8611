//! The bench workload: built by `workload.py` (embedded) from PyPI, cached under the
//! bench directory, reused while its READY.json exists.

use crate::{BenchError, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

const BUILDER: &str = include_str!("workload.py");
/// What `workload.py` builds now (older builds are upgraded in place).
const FORMAT: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    /// The Django git checkout (with its virtualenv in `.venv`).
    pub repo: PathBuf,
    /// The virtualenv's site-packages (Django's test requirements).
    pub site: PathBuf,
    /// The virtualenv's python (runs Django's tests, and the report's plots).
    pub python: PathBuf,
    /// Local wheels the agent's `pip install` steps use (sandboxes have no network).
    pub wheels: PathBuf,
    pub format: u32,
    pub files: u64,
    pub bytes: u64,
    pub versions: Vec<String>,
}

pub fn ensure(dir: &Path) -> Result<Workload> {
    let err = |why: String| BenchError::Workload(why);
    let wdir = dir.join("workload");
    std::fs::create_dir_all(&wdir).map_err(|e| err(format!("create {}: {e}", wdir.display())))?;
    let ready = wdir.join("READY.json");
    let current = std::fs::read_to_string(&ready)
        .ok()
        .and_then(|t| serde_json::from_str::<Workload>(&t).ok())
        .is_some_and(|w| w.format == FORMAT);
    if !current {
        let script = dir.join("workload.py");
        std::fs::write(&script, BUILDER).map_err(|e| err(format!("write builder: {e}")))?;
        let st = Command::new("python3")
            .arg(&script)
            .arg(&wdir)
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| {
                err(format!(
                    "run python3 (install it: apt-get install python3 python3-venv): {e}"
                ))
            })?;
        if !st.success() {
            return Err(err(format!(
                "{} {} exited with {st}; PyPI must be reachable (pip download django)",
                script.display(),
                wdir.display()
            )));
        }
    }
    let text = std::fs::read_to_string(&ready).map_err(|e| err(format!("read READY.json: {e}")))?;
    serde_json::from_str(&text).map_err(|e| err(format!("bad READY.json: {e}")))
}
