//! Squash: merge consecutive frozen layers into one, with overlayfs semantics, so deep
//! checkpoint chains keep short stacks. Layers are immutable, so non-directories are
//! hard-linked rather than copied: cost is O(entries), not O(bytes).

use crate::fsutil::{copy_xattrs, is_opaque, is_whiteout, set_xattr, OPAQUE_XATTR};
use crate::{Result, StoreError};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Merges `layers` (top first) into the empty directory `out`, which then stands for the
/// whole run when stacked over the layers that were below it.
pub fn squash_layers(layers: &[PathBuf], out: &Path) -> Result<()> {
    let active: Vec<&Path> = layers.iter().map(|p| p.as_path()).collect();
    merge_dir(&active, Path::new(""), out, true)
}

fn copy_dir_attrs(src: &Path, dst: &Path) -> Result<()> {
    let md = fs::symlink_metadata(src).map_err(|e| StoreError::io("stat", src, e))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(|e| StoreError::io("chmod", dst, e))?;
    chown(dst, Some(md.uid()), Some(md.gid())).map_err(|e| StoreError::io("chown", dst, e))?;
    copy_xattrs(src, dst)
}

/// `active`: the layers (top first) in which `rel` is a directory that takes part in the
/// merge. `reached_bottom`: the merge of `rel` was not cut short by a whiteout, an
/// opaque directory or a non-directory inside the run; when it was, the merged directory
/// must be opaque so that it keeps hiding what lies below the run.
fn merge_dir(active: &[&Path], rel: &Path, out: &Path, reached_bottom: bool) -> Result<()> {
    let dst = out.join(rel);
    if !rel.as_os_str().is_empty() {
        fs::create_dir(&dst).map_err(|e| StoreError::io("mkdir", &dst, e))?;
    }
    copy_dir_attrs(&active[0].join(rel), &dst)?;
    if !reached_bottom {
        set_xattr(&dst, OPAQUE_XATTR, b"y")?;
    }
    let mut done: HashSet<OsString> = HashSet::new();
    for (i, layer) in active.iter().enumerate() {
        let dir = layer.join(rel);
        let rd = fs::read_dir(&dir).map_err(|e| StoreError::io("read dir", &dir, e))?;
        for e in rd {
            let e = e.map_err(|e| StoreError::io("read dir", &dir, e))?;
            let name = e.file_name();
            if !done.insert(name.clone()) {
                continue;
            }
            let child = rel.join(&name);
            let src = e.path();
            let md = fs::symlink_metadata(&src).map_err(|e| StoreError::io("stat", &src, e))?;
            if md.is_dir() && !is_whiteout(&md) {
                // Collect the layers below that continue this directory.
                let mut sub = vec![*layer];
                let mut cut = is_opaque(&src);
                if !cut {
                    for lower in &active[i + 1..] {
                        match fs::symlink_metadata(lower.join(&child)) {
                            Err(_) => continue,
                            Ok(m) if m.is_dir() && !is_whiteout(&m) => {
                                sub.push(lower);
                                if is_opaque(&lower.join(&child)) {
                                    cut = true;
                                    break;
                                }
                            }
                            Ok(_) => {
                                cut = true;
                                break;
                            }
                        }
                    }
                }
                merge_dir(&sub, &child, out, reached_bottom && !cut)?;
            } else {
                let target = out.join(&child);
                fs::hard_link(&src, &target).map_err(|e| StoreError::io("link", &target, e))?;
            }
        }
    }
    Ok(())
}
