//! `deltabox doctor`: which kernel features this machine has, found at run time.

use crate::Paths;
use deltabox_sys::probe;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    /// "ok", "missing" or "info".
    pub status: String,
    pub detail: String,
}

fn check(name: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status: if ok { "ok" } else { "missing" }.into(),
        detail: detail.into(),
    }
}

fn info(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status: "info".into(),
        detail: detail.into(),
    }
}

/// Locations where the project's CRIU installer puts its private CRIU.
pub const CRIU_CANDIDATES: &[&str] = &[
    "/opt/deltabox/criu/criu",
    "/usr/local/sbin/criu",
    "/usr/sbin/criu",
];

fn ptrace_check() -> Check {
    use nix::sys::ptrace;
    let Ok(mut child) = std::process::Command::new("sleep").arg("5").spawn() else {
        return check("ptrace", false, "could not start a probe process");
    };
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let r = ptrace::seize(pid, ptrace::Options::empty());
    let res = match r {
        Ok(()) => {
            let _ = ptrace::detach(pid, None);
            let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "n/a".into());
            check(
                "ptrace",
                true,
                format!("PTRACE_SEIZE works (yama ptrace_scope {scope})"),
            )
        }
        Err(e) => check("ptrace", false, format!("PTRACE_SEIZE failed: {e}")),
    };
    let _ = child.kill();
    let _ = child.wait();
    res
}

fn cgroups() -> Check {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let v1: Vec<&str> = mounts
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("cgroup"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let v2 = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
        .and_then(|l| l.split_whitespace().nth(1));
    let v2_ctrl = v2.map(|p| {
        std::fs::read_to_string(Path::new(p).join("cgroup.controllers"))
            .unwrap_or_default()
            .trim()
            .to_string()
    });
    let detail = format!(
        "v1: {}; v2: {}",
        if v1.is_empty() {
            "none".into()
        } else {
            v1.join(" ")
        },
        match (v2, v2_ctrl) {
            (Some(p), Some(c)) if !c.is_empty() => format!("{p} (controllers: {c})"),
            (Some(p), _) => format!("{p} (no controllers)"),
            _ => "not mounted".into(),
        }
    );
    check("cgroups", !v1.is_empty() || v2.is_some(), detail)
}

fn criu() -> Check {
    for c in CRIU_CANDIDATES {
        if Path::new(c).exists() {
            let out = std::process::Command::new(c).arg("--version").output();
            let ver = out
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string()
                })
                .unwrap_or_default();
            let chk = std::process::Command::new(c).arg("check").output();
            return match chk {
                Ok(o) if o.status.success() => {
                    check("criu", true, format!("{c}: {ver}, `criu check` passes"))
                }
                Ok(o) => check(
                    "criu",
                    false,
                    format!(
                        "{c}: {ver}, `criu check` fails: {}",
                        String::from_utf8_lossy(&o.stderr)
                            .lines()
                            .last()
                            .unwrap_or("")
                    ),
                ),
                Err(e) => check("criu", false, format!("{c}: {e}")),
            };
        }
    }
    check(
        "criu",
        false,
        "not installed (optional: for durable checkpoints, which DeltaBox does not use yet; Debian 12's CRIU 3.17 fails on kernels this new)",
    )
}

/// Probes the kernel and the layer store.
pub fn doctor(paths: &Paths) -> Vec<Check> {
    let mut out = Vec::new();
    let uname = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    out.push(info("kernel", uname));
    out.push(check(
        "root",
        nix::unistd::geteuid().is_root(),
        "mounts, namespaces and ptrace need root",
    ));
    out.push(check(
        "re-rooting",
        deltabox_process::reroot::supported(),
        "PROCMAP_QUERY (Linux 6.11+): re-roots processes in idle time so long chains of checkpoints and restores stay cheap; without it they get slower with every kept checkpoint",
    ));
    out.push(check(
        "huge pages",
        deltabox_process::hugepages::supported(),
        "MADV_COLLAPSE through process_madvise (Linux 6.1+): memory a shell does not share is collapsed into 2 MiB pages, so forking it (each checkpoint) copies 1/512 of the page-table entries; without it forks copy every 4 KiB entry (DELTABOX_HUGEPAGES=0 turns it off)",
    ));
    out.push(check(
        "overlayfs",
        probe::filesystem_listed("overlay"),
        "kernel overlayfs (the DeltaFS data path)",
    ));
    for (ns, name) in [
        ("mnt", "mount namespace"),
        ("pid", "pid namespace"),
        ("user", "user namespace"),
        ("uts", "uts namespace"),
        ("ipc", "ipc namespace"),
        ("net", "network namespace"),
    ] {
        let ok = Path::new("/proc/self/ns").join(ns).exists();
        out.push(check(&format!("{ns} namespace"), ok, name));
    }
    out.push(ptrace_check());
    out.push(check(
        "seccomp notify",
        probe::seccomp_user_notif(),
        "SECCOMP_RET_USER_NOTIF: the guard that keeps sandbox signals away from process templates (DeltaCR, in progress)",
    ));
    let _ = std::fs::create_dir_all(&paths.root);
    let fs = probe::fs_type(&paths.root);
    match probe::reflink_supported(&paths.root) {
        Ok(true) => out.push(check("reflink", true, format!("{} is on {fs}: copy-up of big files shares blocks", paths.root.display()))),
        Ok(false) => out.push(check("reflink", false, format!("{} is on {fs}, which cannot reflink: copy-up of a big file copies it (put DELTABOX_ROOT on XFS or btrfs for block sharing)", paths.root.display()))),
        Err(e) => out.push(check("reflink", false, format!("could not probe {}: {e}", paths.root.display()))),
    }
    if let Some(free) = probe::free_bytes(&paths.root) {
        out.push(info(
            "layer store",
            format!(
                "{} on {fs}, {:.1} GiB free",
                paths.root.display(),
                free as f64 / (1u64 << 30) as f64
            ),
        ));
    }
    out.push(criu());
    out.push(cgroups());
    out
}
