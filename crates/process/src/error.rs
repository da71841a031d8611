/// Errors of process checkpointing. `Unsupported` is the user-facing "this process
/// cannot be captured exactly" answer; the others are failures of the mechanism.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("pid {pid} ({comm}) cannot be checkpointed exactly: {reason}. {hint}")]
    Unsupported {
        pid: i32,
        comm: String,
        reason: String,
        hint: String,
    },
    #[error("ptrace {op} on pid {pid}: {errno}")]
    Ptrace {
        op: &'static str,
        pid: i32,
        errno: nix::Error,
    },
    #[error("pid {pid} {what}")]
    Tracee { pid: i32, what: String },
    #[error("injected {call} in pid {pid} failed: {errno}")]
    Injected {
        call: &'static str,
        pid: i32,
        errno: nix::Error,
    },
    #[error("reading /proc/{pid}/{file}: {why}")]
    Proc {
        pid: i32,
        file: &'static str,
        why: String,
    },
    #[error("seccomp {op}: {why}")]
    Seccomp { op: &'static str, why: String },
}

impl ProcessError {
    /// A failed read of /proc/`pid`/`file`.
    pub(crate) fn proc(pid: i32, file: &'static str, e: std::io::Error) -> ProcessError {
        ProcessError::Proc {
            pid,
            file,
            why: e.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, ProcessError>;
