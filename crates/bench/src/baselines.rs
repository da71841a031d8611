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
    let out = cmd.output().map_err(|e| BenchError::step(what, e))?;
    if !out.status.success() {
        return Err(BenchError::step(what, String::from_utf8_lossy(&out.stderr)));
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
    let err = |e: std::io::Error| BenchError::step("edit the tree", e);
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
    std::fs::create_dir_all(&work).map_err(|e| BenchError::step("create the baseline dir", e))?;
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
        std::fs::write(&stamp, b"").map_err(|e| BenchError::step("stamp", e))?;
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
        criu(opts, wl, work),
    ])
}

/// A CRIU that passes `criu check`: DELTABOX_CRIU, else where install-criu.sh puts it.
fn criu_binary() -> std::result::Result<std::path::PathBuf, String> {
    let mut tried = Vec::new();
    let env = std::env::var("DELTABOX_CRIU").ok();
    for c in env
        .iter()
        .map(String::as_str)
        .chain(deltabox_sandbox::CRIU_CANDIDATES.iter().copied())
    {
        if !Path::new(c).exists() {
            continue;
        }
        match Command::new(c).arg("check").output() {
            Ok(o) if o.status.success() => return Ok(c.into()),
            Ok(o) => tried.push(format!(
                "{c}: `criu check` fails: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )),
            Err(e) => tried.push(format!("{c}: {e}")),
        }
    }
    Err(if tried.is_empty() {
        "no CRIU installed (scripts/install-criu.sh installs CRIU 4.1 from Debian trixie; Debian 12's 3.17 fails on this kernel)".into()
    } else {
        tried.join("; ")
    })
}

/// CRIU dump/restore of the same REPL (import Django, >= 64 MB heap) run on the host:
/// checkpoint = `criu dump --leave-running` to tmpfs, restore = kill + `criu restore`.
fn criu(opts: &Options, wl: &Workload, work: &Path) -> Baseline {
    let mut b = Baseline {
        name: "CRIU dump/restore".into(),
        checkpoint: None,
        restore: None,
        needs_replay: false,
        note: String::new(),
    };
    let bin = match criu_binary() {
        Ok(bin) => bin,
        Err(why) => {
            b.note = format!("unavailable: {why}");
            return b;
        }
    };
    (opts.progress)(&format!(
        "baseline CRIU ({}): starting the REPL on the host",
        bin.display()
    ));
    match criu_measure(opts, wl, work, &bin) {
        Ok((ck, rs)) => {
            b.checkpoint = Series::new(ck);
            b.restore = Series::new(rs);
            b.note = format!(
                "{}: the same REPL on the host; images on tmpfs; files are not captured",
                bin.display()
            );
        }
        Err(e) => b.note = format!("unavailable: the measurement failed: {e}"),
    }
    b
}

fn criu_measure(
    opts: &Options,
    wl: &Workload,
    work: &Path,
    bin: &Path,
) -> Result<(Vec<f64>, Vec<f64>)> {
    use std::os::unix::process::CommandExt;
    let err = |what: &str, why: String| BenchError::step(format!("CRIU baseline: {what}"), why);
    let log = work.join("criu-repl.log");
    let code = format!(
        "{}\nprint('ready', flush=True)\nimport signal\nwhile True:\n    signal.pause()\n",
        crate::deltabox::setup_code(wl)
    );
    let out = std::fs::File::create(&log).map_err(|e| err("log", e.to_string()))?;
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg("-c")
        .arg(code)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().map_err(|e| err("log", e.to_string()))?)
        .stderr(out);
    // SAFETY: setsid in the child before exec (async-signal-safe).
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| err("start python3", e.to_string()))?;
    let pid = child.id() as i32;
    let until = Instant::now() + std::time::Duration::from_secs(120);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ready")
    {
        if Instant::now() > until || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            return Err(err(
                "REPL setup",
                std::fs::read_to_string(&log).unwrap_or_default(),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let gone = |pid: i32| {
        let until = Instant::now() + std::time::Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    };
    let images = Path::new("/dev/shm/deltabox-bench-criu");
    let (mut ck, mut rs) = (Vec::new(), Vec::new());
    let r = (|| {
        for i in 0..opts.baseline_reps.max(3) {
            (opts.progress)(&format!(
                "baseline CRIU: {}/{}",
                i + 1,
                opts.baseline_reps.max(3)
            ));
            let _ = rm_rf(images);
            std::fs::create_dir_all(images).map_err(|e| err("images dir", e.to_string()))?;
            let t = Instant::now();
            sh(
                "criu dump",
                Command::new(bin)
                    .args(["dump", "--leave-running", "-o", "dump.log", "-t"])
                    .arg(pid.to_string())
                    .arg("-D")
                    .arg(images),
            )?;
            ck.push(ms(t));
            let dumped: u64 = std::fs::read_dir(images)
                .map_err(|e| err("images dir", e.to_string()))?
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("pages-"))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .sum();
            if dumped < 50 << 20 {
                return Err(err(
                    "dump",
                    format!("only {dumped} bytes of memory pages dumped"),
                ));
            }
            // Restore: the live process goes, the dumped one comes back (same pid, so the
            // old one must be reaped first: by us the first time, later by whoever CRIU
            // left as its parent).
            // SAFETY: kill(2) on the REPL this function started (or CRIU restored).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            if i == 0 {
                let _ = child.wait();
            }
            gone(pid);
            let t = Instant::now();
            sh(
                "criu restore",
                Command::new(bin)
                    .args(["restore", "-d", "-o", "restore.log", "-D"])
                    .arg(images),
            )
            .map_err(|e| {
                let log = std::fs::read_to_string(images.join("restore.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                err("restore", format!("{e}; restore.log: {}", tail.join(" | ")))
            })?;
            rs.push(ms(t));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(err("restore", "the restored REPL is not running".into()));
            }
        }
        Ok(())
    })();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = child.wait();
    let _ = rm_rf(images);
    r.map(|_| (ck, rs))
}
