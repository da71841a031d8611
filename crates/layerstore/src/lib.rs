//! DeltaFS layer store.
//!
//! A layer is a plain directory in overlayfs format (whiteouts are 0/0 character devices,
//! opaque directories carry `trusted.overlay.opaque=y`), so any stack of layers can be
//! mounted by a stock kernel. This crate owns the directories on disk, the checkpoint tree
//! and the per-sandbox records, and the userspace algorithms over layers (resolution,
//! diff, squash, garbage collection). It performs no mounts: that is `deltabox-sys`' job.

mod diff;
mod error;
mod fsutil;
mod ids;
mod records;
mod squash;
mod store;
#[cfg(test)]
mod tests;
mod view;

pub use diff::{diff_views, render_patch, Change, ChangeKind};
pub use error::StoreError;
pub use ids::{new_id, validate_id, IdKind};
pub use records::{CheckpointRecord, HugePages, Owner, Reroot, SandboxRecord, ShellKind};
pub use squash::squash_layers;
pub use store::{GcReport, LayerStore, Usage, MAX_STACK_DEPTH};
pub use view::{Entry, EntryKind, View};

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, StoreError>;
