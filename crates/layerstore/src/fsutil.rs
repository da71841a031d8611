//! Small filesystem helpers shared by the store, the view and squash.

use crate::{Result, StoreError};
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";

/// Writes `data` to `path` atomically: readers see the old or the new content, never a
/// mix, even if the process is killed half-way (tmp file + rename in the same directory).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().expect("metadata paths have a parent");
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    let mut f = fs::File::create(&tmp).map_err(|e| StoreError::io("create", &tmp, e))?;
    f.write_all(data)
        .map_err(|e| StoreError::io("write", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        StoreError::io("rename", path, e)
    })
}

/// Overlayfs whiteout: a character device with device number 0/0.
pub fn is_whiteout(md: &fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL")
}

/// Reads an xattr without following symlinks; `None` when absent or unsupported.
pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = cpath(path);
    let n = CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: p and n are valid NUL-terminated strings; buf is writable for its length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(buf)
}

pub fn is_opaque(path: &Path) -> bool {
    get_xattr(path, OPAQUE_XATTR).is_some_and(|v| v == b"y")
}

/// Copies the xattrs of `src` to `dst` (not following symlinks), skipping overlayfs'
/// private ones, which describe `src`'s old position in a stack.
pub fn copy_xattrs(src: &Path, dst: &Path) -> Result<()> {
    let s = cpath(src);
    let mut names = vec![0u8; 4096];
    // SAFETY: s is NUL-terminated; names is writable for its length.
    let len = unsafe { libc::llistxattr(s.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len <= 0 {
        return Ok(());
    }
    names.truncate(len as usize);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            continue;
        }
        if let Some(v) = get_xattr(src, &name) {
            set_xattr(dst, &name, &v)?;
        }
    }
    Ok(())
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<()> {
    let p = cpath(path);
    let n = CString::new(name).expect("xattr names have no NUL");
    // SAFETY: p and n are NUL-terminated; value is readable for its length.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(StoreError::io(
            "set xattr on",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Bytes used on disk by a tree (hard links counted once per tree walk).
pub fn disk_usage(path: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    fn walk(p: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
        let Ok(md) = fs::symlink_metadata(p) else {
            return 0;
        };
        let mut total = 0;
        if seen.insert((md.dev(), md.ino())) {
            total += md.blocks() * 512;
        }
        if md.is_dir() {
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    total += walk(&e.path(), seen);
                }
            }
        }
        total
    }
    walk(path, &mut seen)
}

/// Removes a tree, tolerating its absence.
pub fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("remove", path, e)),
    }
}
