//! Small, well-named wrappers around the privileged Linux syscalls DeltaBox needs.
//!
//! Each function does one thing and returns a [`SysError`] that names the operation and
//! its argument, so the logic that strings them together (in `deltabox-sandbox`) stays
//! readable and the failure a user sees says what was being attempted.

pub mod caps;
pub mod fdpass;
pub mod mount;
pub mod net;
pub mod pidfd;
pub mod probe;
pub mod sched;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[error("{op}{}: {source}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
pub struct SysError {
    pub op: &'static str,
    pub path: Option<PathBuf>,
    #[source]
    pub source: std::io::Error,
}

impl SysError {
    pub fn last(op: &'static str, path: Option<PathBuf>) -> Self {
        SysError {
            op,
            path,
            source: std::io::Error::last_os_error(),
        }
    }
    pub fn new(op: &'static str, path: Option<PathBuf>, source: std::io::Error) -> Self {
        SysError { op, path, source }
    }
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

impl From<(&'static str, nix::Error)> for SysError {
    fn from((op, e): (&'static str, nix::Error)) -> Self {
        SysError::new(op, None, std::io::Error::from_raw_os_error(e as i32))
    }
}

pub type Result<T> = std::result::Result<T, SysError>;
