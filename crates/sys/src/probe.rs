//! Run-time detection of kernel features (what `deltabox doctor` reports).

use std::os::fd::AsRawFd;
use std::path::Path;

/// Whether the filesystem holding `dir` can share blocks between files (FICLONE), which
/// makes overlayfs copy-up of big files cheap.
pub fn reflink_supported(dir: &Path) -> Result<bool, std::io::Error> {
    let a = dir.join(".reflink-probe-a");
    let b = dir.join(".reflink-probe-b");
    std::fs::write(&a, b"deltabox reflink probe")?;
    let src = std::fs::File::open(&a)?;
    let dst = std::fs::File::create(&b)?;
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: both fds are open files; FICLONE takes the source fd as argument.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) };
    let ok = rc == 0;
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    Ok(ok)
}

/// Filesystem type name of the filesystem holding `p` (from statfs magic).
pub fn fs_type(p: &Path) -> String {
    match nix::sys::statfs::statfs(p) {
        Ok(s) => {
            let m = s.filesystem_type().0 as u64;
            match m {
                0xEF53 => "ext4".into(),
                0x5846_5342 => "xfs".into(),
                0x9123_683E => "btrfs".into(),
                0x0102_1994 => "tmpfs".into(),
                0x794C_7630 => "overlayfs".into(),
                other => format!("0x{other:x}"),
            }
        }
        Err(e) => format!("unknown ({e})"),
    }
}

pub fn filesystem_listed(name: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|s| s.lines().any(|l| l.split_whitespace().last() == Some(name)))
        .unwrap_or(false)
}

/// Free bytes on the filesystem holding `p`.
pub fn free_bytes(p: &Path) -> Option<u64> {
    nix::sys::statvfs::statvfs(p)
        .ok()
        .map(|s| s.blocks_available() * s.fragment_size())
}

/// Whether seccomp can hand syscalls to a userspace supervisor (SECCOMP_RET_USER_NOTIF,
/// Linux >= 5.0): DeltaCR's guard that keeps signals away from frozen templates.
pub fn seccomp_user_notif() -> bool {
    let action: u32 = libc::SECCOMP_RET_USER_NOTIF;
    // SAFETY: GET_ACTION_AVAIL only reads the u32 the pointer designates.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0,
            &action as *const u32,
        )
    };
    rc == 0
}
