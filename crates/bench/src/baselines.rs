//! What users do today, on the same tree: copy the whole tree per checkpoint
//! (`cp -a`, as `shutil.copytree` does) and copy it back to restore; and a
//! docker-commit-like tar of the files the step changed (`docker commit` tars the
//! container's upper layer). Neither keeps process state.

use crate::workload::Workload;
use crate::{ms, BenchError, Options, Result, Series};
use serde::Serialize;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub name: String,
    pub checkpoint: Option<Series>,
    pub restore: Option<Series>,
    /// It keeps no process state: a restore must also replay the REPL's setup.
    pub needs_replay: bool,
    /// What it does and does not capture, or why it could not run.
    pub note: String,
}

fn sh(what: &str, cmd: &mut Command) -> Result<()> {
    let out = cmd.output().map_err(|e| BenchError::Step {
        what: what.into(),
        why: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(BenchError::Step {
            what: what.into(),
            why: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

fn cp_a(from: &Path, to: &Path) -> Result<()> {
    sh("cp -a", Command::new("cp").arg("-a").arg(from).arg(to))
}

fn rm_rf(p: &Path) -> Result<()> {
    sh("rm -rf", Command::new("rm").arg("-rf").arg(p))
}

/// An agent-like edit of the tree at `root`.
fn edit(root: &Path, i: usize) -> Result<()> {
    use std::io::Write;
    let err = |e: std::io::Error| BenchError::Step {
        what: "edit the tree".into(),
        why: e.to_string(),
    };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(root.join("django/utils/text.py"))
        .map_err(err)?;
    writeln!(f, "# agent edit {i}").map_err(err)?;
    std::fs::write(root.join(format!("agent-{i}.txt")), vec![b'x'; 10000]).map_err(err)
}

pub fn measure(opts: &Options, wl: &Workload) -> Result<Vec<Baseline>> {
    let work = opts.dir.join("baseline");
    rm_rf(&work)?;
    std::fs::create_dir_all(&work).map_err(|e| BenchError::Step {
        what: "create the baseline dir".into(),
        why: e.to_string(),
    })?;
    let r = run_in(opts, wl, &work);
    let _ = rm_rf(&work);
    r
}

fn run_in(opts: &Options, wl: &Workload, work: &Path) -> Result<Vec<Baseline>> {
    let live = work.join("live");
    (opts.progress)("baseline copytree: preparing a copy of the tree");
    cp_a(&wl.repo, &live)?;
    let (mut ck, mut rs) = (Vec::new(), Vec::new());
    for i in 0..opts.baseline_reps {
        (opts.progress)(&format!(
            "baseline copytree: {}/{}",
            i + 1,
            opts.baseline_reps
        ));
        edit(&live, i)?;
        let snap = work.join("snap");
        let t = Instant::now();
        cp_a(&live, &snap)?;
        ck.push(ms(t));
        edit(&live, i + 1000)?;
        let t = Instant::now();
        rm_rf(&live)?;
        cp_a(&snap, &live)?;
        rs.push(ms(t));
        rm_rf(&snap)?;
    }
    // docker-commit-like: tar the files the step changed (found with find -newer, as
    // the overlay's upper dir would hold them) into a new layer.
    let (mut tar_ms, stamp) = (Vec::new(), work.join("stamp"));
    for i in 0..opts.baseline_reps.max(5) {
        std::fs::write(&stamp, b"").map_err(|e| BenchError::Step {
            what: "stamp".into(),
            why: e.to_string(),
        })?;
        std::thread::sleep(std::time::Duration::from_millis(10));
        edit(&live, 2000 + i)?;
        let t = Instant::now();
        let list = work.join("changed");
        sh(
            "find changed files",
            Command::new("sh").arg("-c").arg(format!(
                "cd {live:?} && find . -newer {stamp:?} -type f > {list:?} && tar -cf {out:?} -T {list:?}",
                out = work.join(format!("layer-{i}.tar"))
            )),
        )?;
        tar_ms.push(ms(t));
    }
    Ok(vec![
        Baseline {
            name: "copytree (cp -a)".into(),
            checkpoint: Series::new(ck),
            restore: Series::new(rs),
            needs_replay: true,
            note: "files only: restoring also replays the REPL (import Django, rebuild the heap)".into(),
        },
        Baseline {
            name: "docker-commit-like tar".into(),
            checkpoint: Series::new(tar_ms),
            restore: None,
            needs_replay: true,
            note: "tar of the files a step changed (found by walking the tree, as a diff of the container's layer); no in-place restore: a new container from the image, so it is left out of the search replay".into(),
        },
        criu(),
    ])
}

/// CRIU dump/restore of the REPL, when a working CRIU is installed.
fn criu() -> Baseline {
    let bin = std::env::var("DELTABOX_CRIU").unwrap_or_else(|_| "criu".into());
    let why = match Command::new(&bin).arg("check").output() {
        Err(e) => format!("unavailable: `{bin}` cannot run ({e}); Debian 12's CRIU 3.17 fails on this kernel (vDSO) and CRIU 4.1 (Debian trixie) has to be installed from a private directory, which this bench does not do yet; set DELTABOX_CRIU to a working criu to include it"),
        Ok(o) if !o.status.success() => format!(
            "unavailable: `{bin} check` failed: {}",
            String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
        ),
        Ok(_) => format!("`{bin} check` passes, but dumping the sandboxed REPL with CRIU is not wired into the bench yet"),
    };
    Baseline {
        name: "CRIU dump/restore".into(),
        checkpoint: None,
        restore: None,
        needs_replay: false,
        note: why,
    }
}
