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
    /// Set for a forked sandbox: init joins the namespaces its parent sandbox made from
    /// a template (pid 1 there is on `FD_ADOPT_PIDFD`) and takes the shell over.
    #[serde(default)]
    pub adopt: Option<Adopt>,
    /// Re-rooting of the sandbox's processes in idle time (resolved: not `Auto`).
    #[serde(default)]
    pub reroot: deltabox_layerstore::Reroot,
    /// Collapse the memory the sandbox's processes do not share into huge pages, so
    /// that forking them is cheap (DELTABOX_HUGEPAGES=0 turns it off).
    #[serde(default)]
    pub huge_pages: bool,
}

/// What a parent sandbox's init made for a forked child (see `Request::Fork`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Adopt {
    /// The shell-to-be, by its pid in the child's pid namespace: running, blocked on
    /// its new (empty) stdin, still on the parent's root.
    pub shell: i32,
    /// The daemon's ends of its new pipes, open in the shell until init takes them:
    /// stdin (write end), stdout, stderr, marker (read ends).
    pub shell_fds: [i32; 4],
    /// Its cwd and open files at the checkpoint, to move onto the child's root.
    pub capture: deltabox_process::inspect::Capture,
    /// PR_GET_DUMPABLE at the checkpoint.
    pub dumpable: u64,
}

/// Fixed descriptor numbers in the init (and, for the shell's, in the shell).
pub const FD_CONTROL: i32 = 3;
pub const FD_SHELL_STDIN: i32 = 4;
pub const FD_SHELL_STDOUT: i32 = 5;
pub const FD_SHELL_STDERR: i32 = 6;
pub const FD_SHELL_MARKER: i32 = 7;
/// Where the shell finds its marker pipe: high, out of the way of user redirections.
pub const SHELL_MARKER_FD: i32 = 1021;
/// In a forked sandbox's init: a pidfd of pid 1 of the namespaces to join.
pub const FD_ADOPT_PIDFD: i32 = 4;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Make the attached mount the sandbox's root and start the shell.
    Root,
    /// Checkpoint the shell as the frozen template `ck`, then move the sandbox onto the
    /// mount of the `Mount` message that follows (the live shell included: cwd and open
    /// files follow it). The daemon builds that mount while init forks.
    Checkpoint { ck: String },
    /// Bring back checkpoint `ck` on the mount of the `Mount` message that follows: kill
    /// every running process, switch roots, and start a copy of the checkpoint's
    /// template as the shell. `files_only` starts a fresh shell instead (the files
    /// alone); without it, a checkpoint without a template gets `NoTemplate`.
    Restore { ck: String, files_only: bool },
    /// Second part of `Checkpoint`/`Restore`: the new root (no descriptor: the daemon
    /// could not build it, abandon the operation).
    Mount,
    /// Kill the template of `ck` (its checkpoint was removed).
    DropTemplate { ck: String },
    /// SIGKILL every process but init, the shell and the templates.
    KillOthers,
    /// Fork sandbox: a copy of the template of `ck` in new user/pid/mount/uts/ipc/
    /// cgroup (and net) namespaces, pid 1 there, plus a shell-to-be forked from it.
    /// Replied with `Forked` and a pidfd of that pid 1.
    Fork { ck: String },
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

/// A successful reply; each request fills what it has to say.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Done {
    pub count: usize,
    pub templates: Vec<TemplateInfo>,
    /// The shell was replaced by a fresh one that the daemon must greet.
    pub fresh_shell: bool,
}

/// A frozen template as init reports it (pid in the sandbox's pid namespace).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateInfo {
    pub ck: String,
    pub pid: i32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    Ok(Done),
    Err {
        error: String,
    },
    /// A process cannot be checkpointed exactly.
    Unsupported {
        pid: i32,
        comm: String,
        reason: String,
        hint: String,
    },
    /// Restore asked for a checkpoint whose process template is gone.
    NoTemplate {
        ck: String,
    },
    /// A checkpoint found processes besides the shell still running.
    Busy {
        procs: Vec<ProcInfo>,
    },
    /// A fork was made (`Request::Fork`); a pidfd of its pid 1 travels alongside.
    Forked(Adopt),
    /// Unsolicited: the shell exited with this wait status description.
    ShellExited {
        code: i32,
    },
}
