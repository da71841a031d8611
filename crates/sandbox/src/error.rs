use deltabox_layerstore::StoreError;

/// Errors of sandbox operations, each saying what failed, why, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: deltabox_sys::SysError,
    },
    #[error("sandbox {id}: its init failed while {during}: {detail}")]
    Init {
        id: String,
        during: &'static str,
        detail: String,
    },
    #[error("sandbox {0} was removed while the operation ran")]
    Removed(String),
    #[error("sandbox {id} is not running ({why}); remove it with `deltabox rm {id}`")]
    Dead { id: String, why: String },
    #[error("cannot checkpoint sandbox {id}: {} still running ({}); a checkpoint of files needs the shell to be the only process. Stop {} (e.g. `kill {}`) or wait for {} to finish", if .procs.len() == 1 { "a background process is" } else { "background processes are" }, .procs.join(", "), if .procs.len() == 1 { "it" } else { "them" }, .pids.join(" "), if .procs.len() == 1 { "it" } else { "them" })]
    BackgroundProcesses {
        id: String,
        procs: Vec<String>,
        pids: Vec<String>,
    },
    #[error("cannot checkpoint sandbox {id}: pid {pid} ({comm}) cannot be captured exactly: {reason}. {hint}")]
    NotCapturable {
        id: String,
        pid: i32,
        comm: String,
        reason: String,
        hint: String,
    },
    #[error("checkpoint {ck} of sandbox {id} has no process template (templates live only in the running sandbox: they do not survive a daemon restart, and a template killed from the host is gone); restore its files alone with `deltabox restore {id} {ck} --files-only` (the shell starts fresh)")]
    NoTemplate { id: String, ck: String },
    #[error("checkpoint {ck} of sandbox {id} has no process template to fork (templates live only in the running sandbox: they do not survive a daemon restart); restore its files alone with `deltabox restore {id} {ck} --files-only`, checkpoint again and fork that checkpoint")]
    NoTemplateToFork { id: String, ck: String },
    #[error("invalid command: {0}")]
    BadCommand(String),
    #[error("base directory {path}: {why}")]
    BadBase { path: String, why: String },
    #[error("owner pid {0} is not a running process; lease the sandbox to a live process (usually the caller's own pid) or to none")]
    BadOwner(i32),
    #[error("{0}")]
    Io(String),
}

impl SandboxError {
    pub(crate) fn sys(op: &'static str) -> impl FnOnce(deltabox_sys::SysError) -> Self {
        move |source| SandboxError::Sys { op, source }
    }
}
