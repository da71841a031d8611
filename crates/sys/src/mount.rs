//! Mounts: overlayfs through the new mount API (detached mounts that can be handed to
//! another mount namespace as a file descriptor), and the classic calls used to build a
//! sandbox's root.

use crate::{Result, SysError};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

fn cstr(s: impl AsRef<std::ffi::OsStr>) -> CString {
    CString::new(s.as_ref().as_bytes()).expect("no NUL in mount arguments")
}

/// Reads the kernel's messages about a failed fsconfig (they name the bad option).
fn fs_log(fsfd: &OwnedFd) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 512];
    loop {
        // SAFETY: fsfd is a valid fs context fd; buf is writable for its length.
        let n = unsafe { libc::read(fsfd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        out.push_str(String::from_utf8_lossy(&buf[..n as usize]).trim());
        out.push_str("; ");
    }
    out
}

fn fsconfig_str(fsfd: &OwnedFd, key: &str, value: &str) -> std::io::Result<()> {
    let (k, v) = (cstr(key), cstr(value));
    // SAFETY: fsfd is a valid fs context; k and v are NUL-terminated and outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd.as_raw_fd(),
            FSCONFIG_SET_STRING,
            k.as_ptr(),
            v.as_ptr(),
            0,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The layers of one overlayfs mount.
#[derive(Debug, Clone)]
pub struct OverlaySpec {
    /// Read-only layers, top first (the base last).
    pub lowers: Vec<PathBuf>,
    /// Writable upper layer and its work directory, if any.
    pub upper: Option<(PathBuf, PathBuf)>,
}

/// fsopen(2) of `fstype`: a new filesystem context.
fn fs_open(fstype: &str) -> Result<OwnedFd> {
    let t = cstr(fstype);
    // SAFETY: t is NUL-terminated; fsopen returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_fsopen, t.as_ptr(), FSOPEN_CLOEXEC) };
    if raw < 0 {
        return Err(SysError::last("fsopen", Some(PathBuf::from(fstype))));
    }
    // SAFETY: raw is a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(raw as RawFd) })
}

/// Creates the filesystem of a configured context (the error is the caller's to word).
fn fs_create(fsfd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fsfd is an fs context; create takes no key or value.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fsfd.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// fsmount(2): a detached mount of a created context, with MOUNT_ATTR_* `attr`.
fn fs_mount(fsfd: &OwnedFd, what: &str, attr: u64) -> Result<OwnedFd> {
    // SAFETY: fsfd is a created fs context; fsmount returns a new mount fd or -1.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, fsfd.as_raw_fd(), FSMOUNT_CLOEXEC, attr) };
    if m < 0 {
        return Err(SysError::last("fsmount", Some(PathBuf::from(what))));
    }
    // SAFETY: m is a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(m as RawFd) })
}

/// Creates a detached overlayfs mount and returns it as a file descriptor.
///
/// Options are fixed so that layers stay plain overlay-format directories any kernel can
/// stack: no redirects, no metacopy, no index (a directory rename that would need a
/// redirect gets EXDEV and tools fall back to copying, as on Docker's overlay2).
pub fn overlay_mount_fd(spec: &OverlaySpec) -> Result<OwnedFd> {
    let fsfd = fs_open("overlay")?;
    let fail = |what: &'static str, p: Option<PathBuf>, e: std::io::Error| {
        let log = fs_log(&fsfd);
        SysError::new(
            what,
            p,
            std::io::Error::new(e.kind(), format!("{e} {log}").trim().to_string()),
        )
    };
    for opt in ["redirect_dir=off", "index=off", "metacopy=off", "xino=off"] {
        let (k, v) = opt.split_once('=').unwrap();
        fsconfig_str(&fsfd, k, v).map_err(|e| fail("overlay option", None, e))?;
    }
    for l in &spec.lowers {
        fsconfig_str(&fsfd, "lowerdir+", &l.to_string_lossy())
            .map_err(|e| fail("overlay lower layer", Some(l.clone()), e))?;
    }
    if let Some((u, w)) = &spec.upper {
        fsconfig_str(&fsfd, "upperdir", &u.to_string_lossy())
            .map_err(|e| fail("overlay upper layer", Some(u.clone()), e))?;
        fsconfig_str(&fsfd, "workdir", &w.to_string_lossy())
            .map_err(|e| fail("overlay work dir", Some(w.clone()), e))?;
    }
    fs_create(&fsfd).map_err(|e| fail("create overlay", None, e))?;
    fs_mount(&fsfd, "overlay", 0)
}

/// A detached mount of a fresh `fstype` instance with no options (proc, sysfs), made in
/// the caller's mount namespace and attachable in another one (`attr`: MOUNT_ATTR_*).
pub fn fs_mount_fd(fstype: &str, attr: u64) -> Result<OwnedFd> {
    let fsfd = fs_open(fstype)?;
    fs_create(&fsfd)
        .map_err(|e| SysError::new("create filesystem", Some(PathBuf::from(fstype)), e))?;
    fs_mount(&fsfd, fstype, attr)
}

/// A detached copy of the mount of `path` (a file or a directory, followed through
/// /proc magic links), attachable in another mount namespace with [`attach_mount`].
pub fn clone_tree(path: &Path) -> Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let p = cstr(path);
    // SAFETY: p is NUL-terminated; open_tree returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            p.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(SysError::last("open_tree", Some(path.into())));
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attaches a detached mount (from [`overlay_mount_fd`]) at `target`.
pub fn attach_mount(mnt: &OwnedFd, target: &Path) -> Result<()> {
    let (empty, t) = (cstr(""), cstr(target));
    // SAFETY: both strings are NUL-terminated; mnt is a valid mount fd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(SysError::last("attach mount at", Some(target.into())));
    }
    Ok(())
}

/// Moves the mount whose root `from` refers to onto the directory `to` refers to (both
/// O_PATH fds), so a mount can be moved even when no path reaches it any more.
pub fn move_mount_fds(from: &OwnedFd, to: &OwnedFd) -> Result<()> {
    let empty = cstr("");
    // SAFETY: fds are valid; empty is NUL-terminated.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            empty.as_ptr(),
            to.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(SysError::last("move mount", None));
    }
    Ok(())
}

/// Opens `path` as an O_PATH descriptor (a handle on a mount or directory).
pub fn open_path(path: &Path) -> Result<OwnedFd> {
    let p = cstr(path);
    // SAFETY: p is NUL-terminated.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_PATH | libc::O_CLOEXEC | libc::O_DIRECTORY,
        )
    };
    if fd < 0 {
        return Err(SysError::last("open", Some(path.into())));
    }
    // SAFETY: fd is a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes every mount below `/` private to this mount namespace.
pub fn make_rprivate() -> Result<()> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_PRIVATE | nix::mount::MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| ("make / private", e).into())
}

pub fn mount_fs(
    fstype: &str,
    target: &Path,
    flags: nix::mount::MsFlags,
    data: Option<&str>,
) -> Result<()> {
    nix::mount::mount(Some(fstype), target, Some(fstype), flags, data)
        .map_err(|e| SysError::new("mount", Some(target.into()), e.into()))
}

pub fn bind_mount(src: &Path, target: &Path, readonly: bool) -> Result<()> {
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some(src),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| SysError::new("bind mount onto", Some(target.into()), e.into()))?;
    if readonly {
        nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(|e| SysError::new("remount read-only", Some(target.into()), e.into()))?;
    }
    Ok(())
}

pub fn move_mount_path(from: &Path, to: &Path) -> Result<()> {
    nix::mount::mount(
        Some(from),
        to,
        None::<&str>,
        nix::mount::MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(|e| SysError::new("move mount to", Some(to.into()), e.into()))
}

/// `pivot_root(".", ".")`: makes the current directory (a mount) the root of this mount
/// namespace for every process whose root was the old root, leaving the old root stacked
/// on top; see pivot_root(2).
pub fn pivot_root_cwd() -> Result<()> {
    let dot = cstr(".");
    // SAFETY: dot is NUL-terminated; pivot_root has no memory side effects.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    if rc < 0 {
        return Err(SysError::last("pivot_root", None));
    }
    Ok(())
}

pub fn detach(target: &Path) -> Result<()> {
    nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| SysError::new("detach mount", Some(target.into()), e.into()))
}
