//! The layer store's own filesystem.
//!
//! Overlayfs refuses a lower layer that lies inside another lower layer ("overlapping
//! lowerdir path"), and the default base is the host's root, which contains the store.
//! So the store lives on a filesystem of its own: either one the operator mounted at
//! `DELTABOX_ROOT` (e.g. XFS or btrfs), or a sparse image file next to it, formatted XFS
//! (reflink: copy-up of big files shares blocks) or ext4 when mkfs.xfs is missing, and
//! loop-mounted by the daemon.

use crate::SandboxError;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Default size of the store image (sparse: it costs what is written).
pub const DEFAULT_IMAGE_BYTES: u64 = 64 << 30;

fn is_mount_point(p: &Path) -> bool {
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<(), SandboxError> {
    let out = cmd
        .output()
        .map_err(|e| SandboxError::Io(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(SandboxError::Io(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

pub fn image_path(root: &Path) -> PathBuf {
    let mut s = root.as_os_str().to_owned();
    s.push(".img");
    PathBuf::from(s)
}

/// Makes sure `root` is a filesystem of its own, creating and mounting the image when
/// needed. Returns a description for logs and `doctor`.
pub fn prepare(root: &Path, image_bytes: u64) -> Result<String, SandboxError> {
    std::fs::create_dir_all(root)
        .map_err(|e| SandboxError::Io(format!("create {}: {e}", root.display())))?;
    if is_mount_point(root) {
        return Ok(format!("{} is its own filesystem", root.display()));
    }
    let img = image_path(root);
    if !img.exists() {
        let f = std::fs::File::create(&img)
            .map_err(|e| SandboxError::Io(format!("create {}: {e}", img.display())))?;
        f.set_len(image_bytes)
            .map_err(|e| SandboxError::Io(format!("size {}: {e}", img.display())))?;
        drop(f);
        let xfs = Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&img)
            .output();
        match xfs {
            Ok(o) if o.status.success() => {}
            _ => run(
                Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img),
                "mkfs.ext4 on the store image",
            )
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&img);
            })?,
        }
    }
    run(
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(root),
        "loop-mount the store image",
    )?;
    Ok(format!(
        "{} is a loop mount of {}",
        root.display(),
        img.display()
    ))
}
