//! DeltaCR: process checkpoints as frozen, forked templates (no kernel patch).
//!
//! * [`tracee`]: ptrace mechanics — stop a process, inject syscalls, fork it remotely.
//! * [`batch`]: many syscalls and copies run by the stopped process itself in one go.
//! * [`inspect`]: decide whether a fork of a process is an exact, independent copy.
//! * [`template`]: checkpoint (fork + park) and restore (fork the template again), and
//!   moving a process onto a new root (cwd and open files).
//! * [`guard`]: the seccomp supervisor that keeps templates out of the sandbox's reach.
//! * [`memory`]: what a template costs.
//! * [`reroot`]: fresh kernel ancestry for a template's memory, so forks stay cheap.
//! * [`hugepages`]: a process's own memory collapsed into huge pages, so forks are cheap.
//!
//! Everything here runs in the sandbox's init, which is single-threaded: ptrace ties a
//! tracee to the thread that attached it.

pub mod batch;
mod error;
pub mod guard;
pub mod hugepages;
pub mod inspect;
pub mod memory;
mod pagemap;
pub mod reroot;
pub mod template;
pub mod tracee;

pub use error::{ProcessError, Result};
pub use inspect::Context;
pub use memory::MemoryCost;
pub use template::{checkpoint, Move, Template};
