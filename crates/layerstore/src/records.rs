use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One node of a sandbox's checkpoint tree. Its file content is the stack of frozen
/// layers (top first) over `base`. Its process state (a frozen template) lives only in
/// the running sandbox and is not recorded: it does not survive the daemon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointRecord {
    pub id: String,
    pub sandbox: String,
    pub parent: Option<String>,
    /// Frozen layers, top first; the base directory is below them.
    pub layers: Vec<String>,
    pub base: PathBuf,
    pub created_unix_ms: u64,
    #[serde(default)]
    pub label: Option<String>,
    /// A removed checkpoint stays as a tombstone so the tree keeps its shape and a
    /// restore of it gets a specific error; its layers are released.
    #[serde(default)]
    pub removed: bool,
    /// Milliseconds the blocking part of the checkpoint took.
    #[serde(default)]
    pub ms: f64,
}

/// A sandbox as the store sees it: the frozen stack under its live upper layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SandboxRecord {
    pub id: String,
    pub base: PathBuf,
    /// Frozen layers under the live upper, top first.
    pub layers: Vec<String>,
    /// The live, writable upper layer.
    pub upper: String,
    /// The checkpoint the live state descends from.
    pub head: Option<String>,
    pub net: bool,
    pub created_unix_ms: u64,
    /// What the persistent session runs.
    #[serde(default)]
    pub shell: ShellKind,
    /// The process whose life this sandbox is leased to: when it exits, the daemon
    /// removes the sandbox (a script killed by SIGKILL leaks nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// The sandbox this one was forked from while both run (its processes live in
    /// namespaces nested in that sandbox's, so they end with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<String>,
    /// Pre-forked and waiting in a warm pool (not listed; discarded on daemon restart).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pooled: bool,
    /// Whether its processes' memory is re-rooted in idle time (DeltaCR).
    #[serde(default, skip_serializing_if = "Reroot::is_auto")]
    pub reroot: Reroot,
    /// Whether memory its processes do not share is collapsed into huge pages (DeltaCR).
    #[serde(default, skip_serializing_if = "HugePages::is_auto")]
    pub huge_pages: HugePages,
}

/// Re-rooting of a sandbox's processes: in idle time, their private memory is copied
/// into fresh mappings so that forks (checkpoints, restores) stay cheap on long
/// lineages (see `deltabox-process`'s `reroot`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Reroot {
    /// As the daemon is configured (DELTABOX_REROOT; on unless it says `0`).
    #[default]
    Auto,
    /// On: each mapping when its generations make it worth a copy.
    On,
    /// Off (a benchmark's comparison).
    Off,
    /// Every mapping in every idle moment, spares forked before rather than after
    /// (tests: what re-rooting did stays visible in the templates' memory).
    Eager,
}

impl Reroot {
    pub fn is_auto(&self) -> bool {
        *self == Reroot::Auto
    }

    /// `Auto` resolved against DELTABOX_REROOT (`0`/`off`, `eager`; anything else: on).
    pub fn resolved(self) -> Reroot {
        match self {
            Reroot::Auto => match std::env::var("DELTABOX_REROOT").ok() {
                v if turned_off(v.as_deref()) => Reroot::Off,
                Some(v) if v == "eager" => Reroot::Eager,
                _ => Reroot::On,
            },
            r => r,
        }
    }
}

/// Huge pages for the memory a sandbox's shell does not share with a template, so that
/// forking it (each checkpoint) copies fewer page-table entries (see
/// `deltabox-process`'s `hugepages`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HugePages {
    /// As the daemon is configured (DELTABOX_HUGEPAGES; on unless it says `0`).
    #[default]
    Auto,
    On,
    /// Off (a benchmark's comparison).
    Off,
}

impl HugePages {
    pub fn is_auto(&self) -> bool {
        *self == HugePages::Auto
    }

    /// Whether it is on, `Auto` resolved against DELTABOX_HUGEPAGES (`0`/`off`: off).
    pub fn enabled(self) -> bool {
        match self {
            HugePages::Auto => !turned_off(std::env::var("DELTABOX_HUGEPAGES").ok().as_deref()),
            h => h == HugePages::On,
        }
    }
}

/// Whether a daemon setting's environment value turns the feature off (`0` or `off`).
fn turned_off(value: Option<&str>) -> bool {
    matches!(value, Some("0") | Some("off"))
}

/// A process, named so that pid reuse cannot impersonate it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Owner {
    pub pid: i32,
    /// Its start time in clock ticks after boot (/proc/PID/stat).
    pub start: u64,
}

/// The interpreter of a sandbox's persistent session.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ShellKind {
    /// bash: commands are shell lines; cwd, env, variables and functions persist.
    #[default]
    Bash,
    /// A Python REPL: commands are Python source; its heap persists.
    Python,
}
