//! Process file descriptors: join another process's namespaces, take its descriptors.

use crate::{Result, SysError};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A pidfd for `pid` (as the caller's pid namespace numbers it).
pub fn open(pid: i32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open with integer arguments; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(SysError::last("pidfd_open", None));
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A copy of descriptor `fd` of the process behind `pidfd` (needs ptrace access to it).
pub fn take_fd(pidfd: &OwnedFd, fd: i32) -> Result<OwnedFd> {
    // SAFETY: pidfd_getfd with a valid pidfd and integers; returns a new fd or -1.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if got < 0 {
        return Err(SysError::last("pidfd_getfd", None));
    }
    // SAFETY: got is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(got as RawFd) })
}

/// Joins the namespaces `flags` (CLONE_NEW*) of the process behind `pidfd`.
pub fn join(pidfd: &OwnedFd, flags: i32) -> Result<()> {
    // SAFETY: setns with a valid pidfd and flags.
    if unsafe { libc::setns(pidfd.as_raw_fd(), flags) } != 0 {
        return Err(SysError::last("setns", None));
    }
    Ok(())
}
