//! Wire types of the DeltaBox HTTP/JSON API (see `openapi.yaml` at the repository root).
//! Only data (and how its percentiles are computed): no HTTP, no sandbox logic.

use serde::{Deserialize, Serialize};

pub const API_PREFIX: &str = "/v1";
pub const DEFAULT_SOCKET: &str = "/run/deltabox/deltabox.sock";
pub const DEFAULT_ROOT: &str = "/var/lib/deltabox";
pub const SOCKET_ENV: &str = "DELTABOX_SOCKET";
pub const ROOT_ENV: &str = "DELTABOX_ROOT";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    #[serde(default)]
    pub net: bool,
    /// The persistent session: "bash" (default) or "python".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Lease the sandbox to this process (a pid on the daemon's host): the daemon
    /// removes the sandbox when that process exits, however it exits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_pid: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub base: String,
    pub net: bool,
    #[serde(default)]
    pub shell: String,
    pub head: Option<String>,
    pub state: String,
    pub checkpoints: usize,
    pub depth: usize,
    pub created_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExecRequest {
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecResponse {
    /// Captured stdout (lossy UTF-8), at most `max_output_bytes`.
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    pub duration_ms: f64,
    pub timed_out: bool,
    pub truncated: bool,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub shell_restarted: bool,
    pub killed: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CheckpointRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointCreated {
    pub id: String,
    pub sandbox: String,
    pub parent: Option<String>,
    pub ms: f64,
    pub depth: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub id: String,
    pub sandbox: String,
    pub parent: Option<String>,
    pub layers: Vec<String>,
    pub base: String,
    pub created_unix_ms: u64,
    pub label: Option<String>,
    pub removed: bool,
    pub ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForkRequest {
    /// How many sandboxes (1..=256).
    #[serde(default = "one")]
    pub n: usize,
    /// Lease the new sandboxes to this host process (see `CreateRequest::owner_pid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_pid: Option<i32>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForkResponse {
    pub checkpoint: String,
    /// The new sandboxes, each a full sandbox starting at the checkpoint.
    pub ids: Vec<String>,
    /// Wall time of the whole request, and per sandbox (nearest-rank p50/p99, each).
    pub ms_total: f64,
    pub ms_p50: f64,
    pub ms_p99: f64,
    pub ms: Vec<f64>,
}

/// The nearest-rank `q` quantile (0 < q <= 1) of `sorted` (ascending, not empty): the
/// `ms_p50`/`ms_p99` of responses, and the bench's percentiles.
pub fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolRequest {
    /// Children to keep pre-forked (0 empties the pool).
    pub size: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolResponse {
    pub checkpoint: String,
    pub size: usize,
    /// Pre-forked children ready now (the rest are being made).
    pub ready: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RestoreRequest {
    pub checkpoint: String,
    /// Restore the files alone and start a fresh shell (needed when the checkpoint's
    /// process template is gone, e.g. after a daemon restart).
    #[serde(default)]
    pub files_only: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreResponse {
    pub sandbox: String,
    pub checkpoint: String,
    pub ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TreeNode {
    pub id: String,
    pub parent: Option<String>,
    pub label: Option<String>,
    pub created_unix_ms: u64,
    pub removed: bool,
    pub head: bool,
    pub depth: usize,
    pub ms: f64,
    /// The checkpoint's frozen process, while the sandbox runs and keeps it.
    #[serde(default)]
    pub template: Option<Template>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    /// Pid inside the sandbox.
    pub pid: i32,
    pub memory: Memory,
}

/// Bytes of memory: resident, proportional share, and private to the process (what
/// freeing it gives back).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Memory {
    pub rss: u64,
    pub pss: u64,
    pub private: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub path: String,
    /// added, deleted or modified.
    pub change: String,
    /// file, dir, symlink or other.
    pub kind: String,
    #[serde(default)]
    pub what: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiffResponse {
    pub from: String,
    pub to: String,
    pub changes: Vec<Change>,
    #[serde(default)]
    pub patch: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcResponse {
    pub layers_removed: usize,
    pub work_dirs_removed: usize,
    pub bytes_freed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Usage {
    pub layers: usize,
    pub bytes: u64,
    pub checkpoints: usize,
    pub sandboxes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    pub version: String,
    pub pid: u32,
    pub root: String,
    pub sandboxes: usize,
    /// Memory held by every live process template.
    #[serde(default)]
    pub template_memory: Memory,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub status: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable: not_found, invalid_id, removed, dead, busy, bad_request,
    /// no_space, internal.
    pub code: String,
    /// What failed, why, and what to do.
    pub message: String,
}
