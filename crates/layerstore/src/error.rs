use std::path::PathBuf;

/// Everything that can go wrong in the layer store, phrased for the person who has to act.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid {kind} id {id:?}: ids look like `{prefix}-` followed by hex digits, as printed by `deltabox ls`/`deltabox tree`")]
    InvalidId {
        kind: &'static str,
        prefix: &'static str,
        id: String,
    },
    #[error("no {kind} with id {id}; list them with `deltabox {hint}`")]
    NotFound {
        kind: &'static str,
        id: String,
        hint: &'static str,
    },
    #[error(
        "checkpoint {0} was removed; restore another checkpoint of the tree (`deltabox tree`)"
    )]
    CheckpointRemoved(String),
    #[error("layer store is full at {path}: {source}. Free space with `deltabox gc` or `deltabox rm`, or point DELTABOX_ROOT at a larger filesystem; no checkpoint was lost")]
    NoSpace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt metadata file {path}: {detail}; move it away to let the daemon start (the layers it names are kept until `deltabox gc`)")]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot compare checkpoints with different bases ({a} vs {b})")]
    DifferentBases { a: PathBuf, b: PathBuf },
}

impl StoreError {
    /// Wraps an I/O error, turning ENOSPC/EDQUOT into the specific "store is full" error.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StoreError::NoSpace { path, source },
            _ => StoreError::Io { op, path, source },
        }
    }
}
