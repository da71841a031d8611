//! Huge pages for a process's anonymous memory, so that a fork copies one page-table
//! entry per 2 MiB instead of 512.
//!
//! Forking is most of a checkpoint, and most of a fork is the page-table copy
//! (copy_page_range: 67-78% of the clone of the bench's 72 MB REPL, perf). Memory mapped by huge
//! pages forks ~8x faster (C probe, 72 MB: 0.13 ms instead of 1.0 ms); once a write has
//! split a shared huge page, its entries still map one large folio and are copied in
//! batches (0.57 ms).
//!
//! MADV_COLLAPSE through process_madvise (Linux 6.1+) copies a 2 MiB range into one huge
//! page from outside the process, running or stopped, whatever the system's THP setting.
//! Only ranges that are nearly full and whose pages all belong to the process alone are
//! collapsed: their old pages are freed, so a collapse costs no memory beyond the few
//! holes it fills. A range that shares pages with a template would need a copy the
//! template keeps: it waits for a re-root, which copies anyway.

use crate::error::{ProcessError, Result};
use crate::pagemap::{self, PAGE};
use deltabox_sys::pidfd;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

pub const HUGE: u64 = 2 << 20;
const PAGES: usize = (HUGE / PAGE) as usize;
/// A range is collapsed when at least this many of its pages are present: the holes a
/// huge page fills with zeros cost at most 1/8 more memory.
const MIN_PRESENT: usize = PAGES * 7 / 8;
const MADV_COLLAPSE: i32 = 25;

/// The 2 MiB-aligned ranges that lie inside private anonymous writable mappings
/// (`maps` is the text of /proc/PID/maps). The stack and the kernel's mappings are not
/// among them.
pub fn aligned_ranges(maps: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms), Some(_off), Some(_dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let name = f.next().unwrap_or("");
        let anon =
            inode == "0" && (name.is_empty() || name == "[heap]" || name.starts_with("[anon:"));
        let Some((a, b)) = crate::inspect::maps_range(range) else {
            continue;
        };
        if !anon || perms != "rw-p" {
            continue;
        }
        let mut at = a.next_multiple_of(HUGE);
        while at + HUGE <= b {
            out.push(at);
            at += HUGE;
        }
    }
    out
}

/// Whether a range whose pagemap entries are `entries` is worth a collapse: nearly full,
/// and every page in it the process's own (`zero_pfn`: the shared zero page, which
/// counts as a hole).
pub fn worth_collapsing(entries: &[u64], zero_pfn: Option<u64>) -> bool {
    let mut present = 0;
    for e in entries {
        if e & pagemap::PRESENT != 0 {
            if zero_pfn.is_some_and(|z| e & pagemap::PFN == z) {
                continue;
            }
            if e & pagemap::FILE != 0 || e & pagemap::EXCLUSIVE == 0 {
                return false;
            }
            present += 1;
        } else if e & pagemap::SWAPPED != 0 {
            return false;
        }
    }
    present >= MIN_PRESENT
}

/// What a [`collapse`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collapsed {
    /// Ranges looked at, from the start of the list (the caller resumes after them).
    pub looked: usize,
    pub collapsed: usize,
}

/// Collapses the ranges of `ranges` (see [`aligned_ranges`]) in `pid` that are worth it,
/// until `budget` is spent. Ranges the kernel refuses (the mapping changed, a page is
/// busy) are skipped; when no huge page can be had the pass ends early.
pub fn collapse(pid: i32, ranges: &[u64], budget: Duration) -> Result<Collapsed> {
    let started = Instant::now();
    let pm = std::fs::File::open(format!("/proc/{pid}/pagemap"))
        .map_err(|e| ProcessError::proc(pid, "pagemap", e))?;
    let pidfd = pidfd::open(pid).map_err(|e| ProcessError::proc(pid, "pidfd", e.source))?;
    let zero = pagemap::zero_pfn();
    let mut done = Collapsed::default();
    for &at in ranges {
        if done.looked > 0 && started.elapsed() >= budget {
            break;
        }
        done.looked += 1;
        let Ok(entries) = pagemap::read(&pm, at, PAGES) else {
            continue; // unmapped meanwhile
        };
        if !worth_collapsing(&entries, zero) {
            continue;
        }
        match collapse_range(&pidfd, at) {
            Ok(()) => done.collapsed += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => break,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Err(ProcessError::proc(pid, "pidfd", e))
            }
            Err(_) => {}
        }
    }
    Ok(done)
}

/// Shortest and longest wait between two looks at the shell's memory.
const LOOK_MIN: Duration = Duration::from_millis(20);
const LOOK_MAX: Duration = Duration::from_secs(1);

/// When to collapse what: a pass over a process's ranges, a slice at a time. The shell
/// is looked at every 20 ms while its memory changes (backing off to once a second
/// while it does not) and gets a pass whenever it has grown by 2 MiB since its last
/// one, and a last one once it stops growing (ranges still filling were skipped). A
/// re-rooted process gets one as soon as its new pages are in place.
#[derive(Debug)]
pub struct Collapser {
    /// The pass in progress: the process and the ranges still to look at.
    pass: Option<(i32, Vec<u64>)>,
    /// Processes waiting for a pass.
    due: Vec<i32>,
    /// The shell as last looked at.
    shell: Option<Shell>,
    next_look: Instant,
    every: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Shell {
    pid: i32,
    /// Anonymous pages at the last look, and when its last pass was planned.
    seen: u64,
    at_pass: u64,
    /// It grew since its last pass was planned.
    growing: bool,
}

impl Shell {
    /// A shell of `anon` pages with nothing to collapse until it grows.
    fn settled(pid: i32, anon: u64) -> Shell {
        Shell {
            pid,
            seen: anon,
            at_pass: anon,
            growing: false,
        }
    }
}

impl Collapser {
    pub fn new(now: Instant) -> Collapser {
        Collapser {
            pass: None,
            due: Vec::new(),
            shell: None,
            next_look: now + LOOK_MIN,
            every: LOOK_MIN,
        }
    }

    /// Whether a pass is in progress or waiting.
    pub fn busy(&self) -> bool {
        self.pass.is_some() || !self.due.is_empty()
    }

    /// How long until the shell should be looked at again.
    pub fn look_in(&self, now: Instant) -> Duration {
        self.next_look.saturating_duration_since(now)
    }

    /// Looks at the shell's anonymous memory (`anon_pages`, from statm) if that is due,
    /// and plans a pass over it when it has grown (see [`Collapser`]).
    pub fn look(&mut self, shell: i32, anon_pages: impl FnOnce() -> Option<u64>, now: Instant) {
        if now < self.next_look {
            return;
        }
        let Some(anon) = anon_pages() else { return };
        let mut s = match self.shell {
            Some(s) if s.pid == shell => s,
            _ => Shell {
                pid: shell,
                seen: 0,
                at_pass: 0,
                growing: true,
            },
        };
        let changed = anon != s.seen;
        if anon >= s.at_pass + PAGES as u64 || (s.growing && !changed) {
            // Grown by a huge page; or settled after growing: the ranges that were
            // still filling at the last pass are full now.
            s.growing = changed;
            s.at_pass = anon;
            self.queue(shell);
        } else if changed {
            s.growing = true;
        }
        s.seen = anon;
        self.shell = Some(s);
        self.every = if changed {
            LOOK_MIN
        } else {
            (self.every * 2).min(LOOK_MAX)
        };
        self.next_look = now + self.every;
    }

    /// Before the shell is forked (a checkpoint): once its pages are shared with the
    /// template, collapsing them would cost a copy the template keeps. So a pass due
    /// on the shell, or growth since its last one (512 KiB or more: ranges that were
    /// filling then may be full now), is carried out first, for `budget` at most.
    pub fn before_fork(&mut self, shell: i32, anon_pages: Option<u64>, budget: Duration) {
        let started = Instant::now();
        let grown = match (self.shell, anon_pages) {
            (Some(s), Some(anon)) if s.pid == shell => anon >= s.at_pass + PAGES as u64 / 4,
            (_, Some(_)) => true,
            (_, None) => false,
        };
        if let (true, Some(anon)) = (grown, anon_pages) {
            self.shell = Some(Shell::settled(shell, anon));
            self.queue(shell);
        }
        if self.pass.as_ref().is_some_and(|p| p.0 != shell) {
            return; // another process's pass (a re-rooted template) goes on later
        }
        if let Some(i) = self.due.iter().position(|p| *p == shell) {
            // Its pass next.
            let pid = self.due.remove(i);
            self.due.push(pid);
        }
        while self.pass.is_some() || self.due.last() == Some(&shell) {
            let left = budget.saturating_sub(started.elapsed());
            if left.is_zero() || self.step(left).is_err() {
                break;
            }
        }
    }

    /// A new shell that is a copy of a template (a restore, a fork): every page it has
    /// is shared, so only what it allocates from here on is worth a pass.
    pub fn copied_shell(&mut self, pid: i32, anon_pages: Option<u64>) {
        self.shell = Some(Shell::settled(pid, anon_pages.unwrap_or(0)));
        self.due.retain(|p| *p != pid);
    }

    /// Plans a pass over `pid`.
    pub fn queue(&mut self, pid: i32) {
        if self.pass.as_ref().map(|p| p.0) != Some(pid) && !self.due.contains(&pid) {
            self.due.push(pid);
        }
    }

    /// One slice of work (at most `budget`): the next ranges of the pass in progress, or
    /// the plan of the next one. A process that is gone ends its pass.
    pub fn step(&mut self, budget: Duration) -> Result<Collapsed> {
        let (pid, ranges) = match self.pass.take() {
            Some(p) => p,
            None => {
                let Some(pid) = self.due.pop() else {
                    return Ok(Collapsed::default());
                };
                let maps = crate::inspect::proc_read(pid, "maps")?;
                (pid, aligned_ranges(&maps))
            }
        };
        let done = collapse(pid, &ranges, budget)?;
        if done.looked < ranges.len() {
            self.pass = Some((pid, ranges[done.looked..].to_vec()));
        }
        Ok(done)
    }
}

/// Anonymous memory of `pid` in pages: resident minus file-backed (/proc/PID/statm).
pub fn anon_pages(pid: i32) -> Option<u64> {
    let statm = crate::inspect::read_proc(&format!("/proc/{pid}/statm")).ok()?;
    let f: Vec<u64> = statm
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    Some(f.get(1)?.saturating_sub(*f.get(2)?))
}

/// Whether this kernel collapses memory into huge pages on request (MADV_COLLAPSE
/// through process_madvise): tried on a scratch range of our own.
pub fn supported() -> bool {
    let len = (2 * HUGE) as usize;
    let (prot, flags) = (
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
    );
    // SAFETY: a fresh private anonymous mapping, unmapped below; nothing else uses it.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
    if p == libc::MAP_FAILED {
        return false;
    }
    let at = (p as u64).next_multiple_of(HUGE);
    // SAFETY: [at, at + HUGE) lies inside the mapping made above; writing it is ours.
    unsafe { std::ptr::write_bytes(at as *mut u8, 1, HUGE as usize) };
    let ok = pidfd::open(std::process::id() as i32).is_ok_and(|fd| collapse_range(&fd, at).is_ok());
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { libc::munmap(p, len) };
    ok
}

/// MADV_COLLAPSE of the 2 MiB at `at` in the process behind `pidfd`.
fn collapse_range(pidfd: &OwnedFd, at: u64) -> std::io::Result<()> {
    let iov = libc::iovec {
        iov_base: at as *mut libc::c_void,
        iov_len: HUGE as usize,
    };
    // SAFETY: process_madvise reads one iovec from `iov`, which outlives the call; the
    // range it names is in the other process and only advised, never dereferenced here.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_process_madvise,
            pidfd.as_raw_fd(),
            &iov as *const libc::iovec,
            1,
            MADV_COLLAPSE,
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Looks at shell `pid` with `pages` of anonymous memory `after` the next look is
    /// due; returns whether that planned a pass (and forgets it).
    fn look_at(c: &mut Collapser, pid: i32, pages: u64) -> bool {
        let t = c.next_look;
        c.look(pid, || Some(pages), t);
        let due = c.busy();
        c.due.clear();
        due
    }

    #[test]
    fn the_shell_gets_a_pass_per_huge_page_of_growth_and_one_when_it_settles() {
        let t0 = Instant::now();
        let mut c = Collapser::new(t0);
        c.look(7, || panic!("not due yet"), t0);
        let huge = PAGES as u64;
        assert!(
            look_at(&mut c, 7, 2 * huge),
            "a new shell with 2 huge pages of memory"
        );
        assert!(
            !look_at(&mut c, 7, 2 * huge + 100),
            "grew by less than a huge page"
        );
        assert_eq!(c.every, LOOK_MIN, "looks often while it changes");
        assert!(look_at(&mut c, 7, 3 * huge + 100), "a huge page more");
        assert!(!look_at(&mut c, 7, 3 * huge + 200));
        assert!(look_at(&mut c, 7, 3 * huge + 200), "settled: a last pass");
        assert!(!look_at(&mut c, 7, 3 * huge + 200), "and only one");
        assert!(!look_at(&mut c, 7, 3 * huge + 200));
        assert!(c.every > LOOK_MIN, "backs off while nothing changes");
        for _ in 0..20 {
            look_at(&mut c, 7, 3 * huge + 200);
        }
        assert_eq!(c.every, LOOK_MAX);
        assert!(
            look_at(&mut c, 8, huge),
            "another shell (a restore) starts afresh"
        );
        c.queue(8);
        c.queue(8);
        assert_eq!(c.due, vec![8], "queued once");
    }

    #[test]
    fn aligned_ranges_lie_inside_private_anonymous_writable_mappings() {
        let maps = "\
00400000-00600000 r-xp 00000000 08:01 12 /usr/bin/python3.11
00a00000-01100000 rw-p 00000000 00:00 0 [heap]
7f0000100000-7f0000500000 rw-p 00000000 00:00 0
7f0000600000-7f0000a00000 rw-p 00000000 08:01 99 /data/file
7f0000c00000-7f0000e00000 rw-s 00000000 00:01 7 /dev/zero (deleted)
7f0001000000-7f0001400000 r--p 00000000 00:00 0
7f0002000000-7f0002400000 rw-p 00000000 00:00 0 [anon:arena]
7ffd00000000-7ffd00400000 rw-p 00000000 00:00 0 [stack]
";
        assert_eq!(
            aligned_ranges(maps),
            vec![
                0xa00000,
                0xc00000,
                0xe00000,
                0x7f0000200000,
                0x7f0002000000,
                0x7f0002200000
            ]
        );
    }

    #[test]
    fn only_nearly_full_ranges_of_own_pages_are_worth_a_collapse() {
        let own = pagemap::PRESENT | pagemap::EXCLUSIVE | 1000;
        let full = vec![own; PAGES];
        assert!(worth_collapsing(&full, None));
        let mut holes = full.clone();
        holes[..PAGES - MIN_PRESENT].fill(0);
        assert!(worth_collapsing(&holes, None));
        holes[PAGES - MIN_PRESENT] = 0;
        assert!(!worth_collapsing(&holes, None), "too many holes");
        let mut shared = full.clone();
        shared[7] = pagemap::PRESENT | 1000; // a page a template still maps
        assert!(!worth_collapsing(&shared, None));
        let mut file = full.clone();
        file[7] |= pagemap::FILE;
        assert!(!worth_collapsing(&file, None));
        let mut swapped = full.clone();
        swapped[7] = pagemap::SWAPPED;
        assert!(!worth_collapsing(&swapped, None));
        // Zero-page reads are holes, not shared pages.
        let mut zero = full.clone();
        zero[7] = pagemap::PRESENT | 5;
        assert!(worth_collapsing(&zero, Some(5)));
        assert!(!worth_collapsing(&zero, None));
    }
}
