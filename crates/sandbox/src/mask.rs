//! The mask layer: a small frozen layer right above a sandbox's base that hides what a
//! sandbox must not see of the host (the layer store itself, the daemon's socket, the
//! host's /run with its service sockets, the host's /tmp) and supplies the mount points a
//! bare base directory may lack.

use crate::SandboxError;
use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::Path;

const OPAQUE_EMPTY: &[(&str, u32)] = &[("run", 0o755), ("tmp", 0o1777)];
const MOUNT_POINTS: &[&str] = &["proc", "dev", "sys"];

fn io(what: &str, p: &Path, e: std::io::Error) -> SandboxError {
    SandboxError::Io(format!("{what} {}: {e}", p.display()))
}

/// Creates `rel` as a directory in `layer` with the metadata of the same directory in
/// `base` (or `mode`, root-owned, when the base lacks it).
fn mirror_dir(layer: &Path, base: &Path, rel: &Path, mode: u32) -> Result<(), SandboxError> {
    let dst = layer.join(rel);
    if dst.is_dir() {
        return Ok(());
    }
    fs::create_dir(&dst).map_err(|e| io("create", &dst, e))?;
    let (mode, uid, gid) = match fs::metadata(base.join(rel)) {
        Ok(md) if md.is_dir() => (md.mode() & 0o7777, md.uid(), md.gid()),
        _ => (mode, 0, 0),
    };
    fs::set_permissions(&dst, fs::Permissions::from_mode(mode))
        .map_err(|e| io("chmod", &dst, e))?;
    chown(&dst, Some(uid), Some(gid)).map_err(|e| io("chown", &dst, e))
}

fn whiteout(path: &Path) -> Result<(), SandboxError> {
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .map_err(|e| io("create whiteout", path, e.into()))
}

/// The hidden paths that are not inside another one (hiding the outer one hides them;
/// a whiteout cannot also be a directory holding another whiteout).
fn outermost(hidden: &[std::path::PathBuf]) -> Vec<&std::path::PathBuf> {
    hidden
        .iter()
        .filter(|h| !hidden.iter().any(|o| o != *h && h.starts_with(o)))
        .collect()
}

pub(crate) fn build(
    layer: &Path,
    base: &Path,
    hidden: &[std::path::PathBuf],
) -> Result<(), SandboxError> {
    for (d, mode) in OPAQUE_EMPTY {
        mirror_dir(layer, base, Path::new(d), *mode)?;
        let p = layer.join(d);
        let name = std::ffi::CString::new("trusted.overlay.opaque").unwrap();
        let cp = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: both strings are NUL-terminated; the value is a 1-byte buffer.
        if unsafe { libc::lsetxattr(cp.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) } != 0 {
            return Err(io("mark opaque", &p, std::io::Error::last_os_error()));
        }
    }
    for d in MOUNT_POINTS {
        mirror_dir(layer, base, Path::new(d), 0o755)?;
    }
    for h in outermost(hidden) {
        let Ok(rel) = h.strip_prefix(base) else {
            continue;
        };
        if rel.as_os_str().is_empty() || !base.join(rel).exists() {
            continue;
        }
        let first = rel.components().next().map(|c| c.as_os_str().to_owned());
        if OPAQUE_EMPTY
            .iter()
            .any(|(d, _)| first.as_deref() == Some(std::ffi::OsStr::new(d)))
        {
            continue; // already hidden by an opaque directory
        }
        let mut prefix = std::path::PathBuf::new();
        let comps: Vec<_> = rel.components().collect();
        for c in &comps[..comps.len() - 1] {
            prefix.push(c);
            mirror_dir(layer, base, &prefix, 0o755)?;
        }
        whiteout(&layer.join(rel))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::outermost;
    use std::path::PathBuf;

    #[test]
    fn nested_hidden_paths_collapse_to_the_outer_one() {
        let h: Vec<PathBuf> = [
            "/var/tmp/x/root",
            "/var/tmp/x",
            "/run/deltabox",
            "/var/tmp/xy",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let got: Vec<&str> = outermost(&h).iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(got, ["/var/tmp/x", "/run/deltabox", "/var/tmp/xy"]);
    }
}
