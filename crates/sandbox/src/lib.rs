//! Sandboxes over the DeltaFS layer store.
//!
//! A sandbox is an init process in fresh mount/pid/uts/ipc(/net) namespaces whose root is
//! a kernel overlayfs mount of frozen layers plus one live upper layer, and a persistent
//! bash fed through pipes. A checkpoint freezes the upper and moves everything onto a new
//! mount with a fresh upper (O(1) in the size of the tree); a restore moves onto a mount
//! of a checkpoint's layers. See ARCHITECTURE.md.

mod chores;
mod doctor;
mod error;
pub mod init;
mod manager;
mod mask;
mod protocol;
mod sandbox;
mod shell;
pub mod storefs;

pub use doctor::{doctor, Check, CRIU_CANDIDATES};
pub use error::SandboxError;
pub use manager::{
    CheckpointInfo, CreateOptions, DiffResult, Handle, Manager, SandboxInfo, TemplateInfo, TreeNode,
};
pub use sandbox::{ExecOptions, Sandbox};
pub use shell::ExecOutput;

pub use deltabox_layerstore::{
    Change, ChangeKind, GcReport, HugePages, Reroot, ShellKind, StoreError, Usage,
};

use std::path::PathBuf;

/// Where things live on the host.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Root of the layer store (`DELTABOX_ROOT`, default /var/lib/deltabox).
    pub root: PathBuf,
    /// The binary that runs the in-sandbox init (`deltabox __init`).
    pub init_exe: PathBuf,
    /// Host paths hidden from sandboxes whose base contains them (the daemon's socket
    /// directory, for instance), besides the store itself.
    pub hidden: Vec<PathBuf>,
}

impl Paths {
    pub fn staging(&self) -> PathBuf {
        self.root.join("mnt")
    }
}
