//! CPU scheduling of processes init does not wait for.

use crate::{Result, SysError};

/// Puts `pid` in SCHED_IDLE: it runs only when a CPU has nothing else to do. A killed
/// process tears its memory down after the restore that killed it has moved on; on a
/// small machine that teardown would otherwise compete with the next request.
pub fn run_only_when_idle(pid: i32) -> Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the duration of the call.
    let rc = unsafe { libc::sched_setscheduler(pid, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        return Err(SysError::last("sched_setscheduler SCHED_IDLE", None));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_child_can_be_made_idle_priority() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        super::run_only_when_idle(child.id() as i32).unwrap();
        // SAFETY: plain query of a live child's policy.
        let policy = unsafe { libc::sched_getscheduler(child.id() as i32) };
        assert_eq!(policy, libc::SCHED_IDLE);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
