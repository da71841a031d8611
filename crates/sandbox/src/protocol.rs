//! Messages between the daemon-side [`crate::Sandbox`] and the in-sandbox init, one JSON
//! object per SOCK_SEQPACKET datagram; mounts travel alongside as SCM_RIGHTS descriptors.

use serde::{Deserialize, Serialize};

/// What the init is started with (passed as its single argument, JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    pub hostname: String,
    pub net: bool,
    /// An existing directory of the host, used as a scratch mount point before the
    /// sandbox's root replaces the host's (the mount happens in the sandbox's private
    /// mount namespace, the host never sees it).
    pub staging: String,
    pub shell: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Fixed descriptor numbers in the init (and, for the shell's, in the shell).
pub const FD_CONTROL: i32 = 3;
pub const FD_SHELL_STDIN: i32 = 4;
pub const FD_SHELL_STDOUT: i32 = 5;
pub const FD_SHELL_STDERR: i32 = 6;
pub const FD_SHELL_MARKER: i32 = 7;
/// Where the shell finds its marker pipe: high, out of the way of user redirections.
pub const SHELL_MARKER_FD: i32 = 1021;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Make the attached mount the sandbox's root and start the shell.
    Root,
    /// Move every process whose root is the sandbox root onto the attached mount.
    SwitchRoot,
    /// Processes other than init and the shell.
    Procs,
    /// SIGKILL every process but init and the shell.
    KillOthers,
    /// Send a signal to the shell.
    SignalShell { signal: i32 },
    /// Kill the shell (if alive) and start a new one.
    RestartShell,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProcInfo {
    pub pid: i32,
    pub comm: String,
    pub state: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    Ok {
        #[serde(default)]
        procs: Vec<ProcInfo>,
        #[serde(default)]
        count: usize,
    },
    Err {
        error: String,
    },
    /// Unsolicited: the shell exited with this wait status description.
    ShellExited {
        code: i32,
    },
}
