//! Re-rooting: giving a process's private memory a fresh kernel ancestry.
//!
//! Every fork links each of the child's anonymous mappings to the anon_vma of every
//! generation before it, and a fork costs one link (an interval-tree insert) per
//! mapping per *live* generation. Templates are kept alive, so a shell restored and
//! checkpointed over and over forks slower and slower (docs/DELTACR.md#costs). A mapping
//! copied into a fresh mapping at the same address starts a new family of one: the
//! copy is byte for byte the same memory, at the price of no longer sharing its pages
//! with the generations before.
//!
//! [`plan`] picks the mappings (pure: parsed from smaps); [`reroot`] swaps them in a
//! stopped process by injected syscalls: map a fresh region between two guard pages
//! (so it cannot merge with a neighbour and its old ancestry), copy the pages that are
//! the process's own, set the protection, `mremap` it over the old one (atomic), unmap
//! the guards. A mapping that cannot be swapped exactly is left as it was.

use crate::error::{ProcessError, Result};
use crate::inspect::{proc_read, vma_backing};
use crate::tracee::Tracee;
use std::os::unix::fs::FileExt;

const PAGE: u64 = 4096;
/// Mappings with at most this much anonymous memory are "small" (libraries' data and
/// relocation tables: most mappings, little memory).
pub const SMALL_BYTES: u64 = 1 << 20;
/// VmFlags a swapped mapping reproduces exactly (a fresh private mapping made
/// read-write, then given the old protection). Anything else is left alone.
const REPRODUCIBLE_FLAGS: [&str; 9] = ["rd", "wr", "ex", "mr", "mw", "me", "ac", "sd", "mt"];

/// Which mappings to re-root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Those with at most [`SMALL_BYTES`] of anonymous memory: cheap in memory.
    Small,
    /// All that can be.
    All,
}

/// A private mapping to give a fresh ancestry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    /// PROT_* of the mapping.
    pub prot: i32,
    /// The file it maps (path as in maps, offset, inode), if any.
    pub file: Option<(String, u64, u64)>,
    pub anon_bytes: u64,
}

/// The mappings of a process (its smaps text) worth and safe to re-root.
pub fn plan(smaps: &str, tier: Tier) -> Vec<Region> {
    let mut out = Vec::new();
    let mut cur: Option<(Region, bool)> = None;
    let flush = |c: Option<(Region, bool)>, out: &mut Vec<Region>| {
        if let Some((r, true)) = c {
            if r.anon_bytes > 0 && (tier == Tier::All || r.anon_bytes <= SMALL_BYTES) {
                out.push(r);
            }
        }
    };
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first
            .split_once('-')
            .filter(|_| !first.ends_with(':'))
            .and_then(|(a, b)| {
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                ))
            })
        {
            flush(cur.take(), &mut out);
            let perms = f.next().unwrap_or("");
            let offset = f.next().and_then(|o| u64::from_str_radix(o, 16).ok());
            let _dev = f.next();
            let inode = f.next().and_then(|i| i.parse::<u64>().ok());
            let path = f.collect::<Vec<_>>().join(" ");
            let p = perms.as_bytes();
            let ok_perms = p.len() == 4 && p[0] == b'r' && p[3] == b'p';
            let file = match (path.as_str(), offset, inode) {
                ("", _, _) => Some(None),
                (p, Some(off), Some(ino)) if p.starts_with('/') && !p.ends_with(" (deleted)") => {
                    Some(Some((p.to_string(), off, ino)))
                }
                // [heap] is plain anonymous memory; [stack] grows down, [vdso] & co.
                // are the kernel's: left alone.
                ("[heap]", _, _) => Some(None),
                _ => None,
            };
            let prot = p
                .iter()
                .zip([libc::PROT_READ, libc::PROT_WRITE, libc::PROT_EXEC])
                .fold(0, |acc, (c, bit)| if *c != b'-' { acc | bit } else { acc });
            cur = file.filter(|_| ok_perms).map(|file| {
                (
                    Region {
                        start: a,
                        end: b,
                        prot,
                        file,
                        anon_bytes: 0,
                    },
                    false,
                )
            });
        } else if let Some((r, ok)) = cur.as_mut() {
            match first {
                "Anonymous:" => {
                    r.anon_bytes = f.next().and_then(|k| k.parse::<u64>().ok()).unwrap_or(0) * 1024
                }
                "VmFlags:" => {
                    let flags: Vec<&str> = f.collect();
                    *ok = flags.contains(&"ac")
                        && flags.iter().all(|x| REPRODUCIBLE_FLAGS.contains(x));
                }
                _ => {}
            }
        }
    }
    flush(cur.take(), &mut out);
    out
}

/// The mappings of `pid` to re-root in `tier`.
pub fn plan_for(pid: i32, tier: Tier) -> Result<Vec<Region>> {
    Ok(plan(&proc_read(pid, "smaps")?, tier))
}

/// What a [`reroot`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rerooted {
    pub regions: usize,
    /// Mappings left as they were (their file could not be reopened as the same file).
    pub skipped: usize,
    pub bytes_copied: u64,
}

/// Swaps each of `regions` of the stopped `t` for a fresh copy (see the module doc).
/// Stops early, between regions, once `budget` has passed; returns how many regions it
/// went through. Memory contents never change; an error leaves the current region as
/// it was.
pub fn reroot(
    t: &mut Tracee,
    regions: &[Region],
    budget: std::time::Duration,
) -> Result<(usize, Rerooted)> {
    let started = std::time::Instant::now();
    let pid = t.pid.as_raw();
    let maps =
        std::fs::File::open(format!("/proc/{pid}/maps")).map_err(|e| proc_err(pid, "maps", e))?;
    let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap"))
        .map_err(|e| proc_err(pid, "pagemap", e))?;
    // Read through /proc/PID/mem: process_vm_readv pins pages, and pinning a page shared
    // with other processes un-shares it first (a copy per page read).
    let mem =
        std::fs::File::open(format!("/proc/{pid}/mem")).map_err(|e| proc_err(pid, "mem", e))?;
    let files = Files {
        maps: &maps,
        pagemap: &pagemap,
        mem: &mem,
    };
    let mut done = Rerooted::default();
    let mut n = 0;
    for r in regions {
        if n > 0 && started.elapsed() >= budget {
            break;
        }
        n += 1;
        match swap(t, r, &files)? {
            Some(bytes) => {
                done.regions += 1;
                done.bytes_copied += bytes;
            }
            None => done.skipped += 1,
        }
    }
    Ok((n, done))
}

/// The target's /proc files a re-root reads.
struct Files<'a> {
    maps: &'a std::fs::File,
    pagemap: &'a std::fs::File,
    mem: &'a std::fs::File,
}

fn proc_err(pid: i32, file: &'static str, e: std::io::Error) -> ProcessError {
    ProcessError::Proc {
        pid,
        file,
        why: e.to_string(),
    }
}

/// One region: `Some(bytes copied)`, or `None` when it was left alone.
fn swap(t: &mut Tracee, r: &Region, files: &Files) -> Result<Option<u64>> {
    let len = r.end - r.start;
    // The region must still be what was planned (a plan is made in one idle moment and
    // carried out over several).
    let same = match (vma_backing(files.maps, r.start), &r.file) {
        (Some((s, e, off, ino)), Some((_, o, i))) => (s, e, off, ino) == (r.start, r.end, *o, *i),
        (Some((s, e, _, 0)), None) => (s, e) == (r.start, r.end),
        _ => false,
    };
    if !same {
        return Ok(None);
    }
    let fd = match &r.file {
        None => -1,
        Some((path, ..)) => {
            let mut c = path.as_bytes().to_vec();
            c.push(0);
            let flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
            let at = libc::AT_FDCWD as u64;
            match t.with_scratch(&c, |t, a| {
                t.call("openat", libc::SYS_openat, &[at, a, flags])
            }) {
                Ok(fd) => fd,
                Err(ProcessError::Injected { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    };
    let guard = t.call(
        "mmap",
        libc::SYS_mmap,
        &[
            0,
            len + 2 * PAGE,
            libc::PROT_NONE as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE) as u64,
            u64::MAX,
            0,
        ],
    );
    let guard = match guard {
        Ok(g) => g as u64,
        Err(e) => {
            close(t, fd)?;
            return Err(e);
        }
    };
    let tmp = guard + PAGE;
    let res = fill(t, r, fd, tmp, files);
    close(t, fd)?;
    let copied = match res {
        Ok(Some(bytes)) => bytes,
        other => {
            t.call("munmap", libc::SYS_munmap, &[guard, len + 2 * PAGE])?;
            return other;
        }
    };
    let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    if let Err(e) = t.call("mremap", libc::SYS_mremap, &[tmp, len, len, flags, r.start]) {
        t.call("munmap", libc::SYS_munmap, &[guard, len + 2 * PAGE])?;
        return Err(e);
    }
    // The copy has moved out from between the guards: this unmaps the guards alone.
    t.call("munmap", libc::SYS_munmap, &[guard, len + 2 * PAGE])?;
    Ok(Some(copied))
}

fn close(t: &mut Tracee, fd: i64) -> Result<()> {
    if fd >= 0 {
        t.call("close", libc::SYS_close, &[fd as u64])?;
    }
    Ok(())
}

/// Maps the fresh region at `tmp`, copies into it, gives it the old protection.
fn fill(t: &mut Tracee, r: &Region, fd: i64, tmp: u64, files: &Files) -> Result<Option<u64>> {
    let len = r.end - r.start;
    let (mut flags, off) = (
        libc::MAP_PRIVATE | libc::MAP_FIXED,
        r.file.as_ref().map_or(0, |f| f.1),
    );
    if fd < 0 {
        flags |= libc::MAP_ANONYMOUS;
    }
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    t.call(
        "mmap",
        libc::SYS_mmap,
        &[tmp, len, rw, flags as u64, fd as u64, off],
    )?;
    if let Some((_, o, i)) = &r.file {
        // Reopened by path: it must be the very file that is mapped.
        match vma_backing(files.maps, tmp) {
            Some((_, _, off, ino)) if off == *o && ino == *i => {}
            _ => return Ok(None),
        }
    }
    let copied = copy_own_pages(t, r, tmp, files)?;
    if r.prot != rw as i32 {
        t.call("mprotect", libc::SYS_mprotect, &[tmp, len, r.prot as u64])?;
    }
    Ok(Some(copied))
}

/// Copies the pages of `r` that are the process's own (anonymous: written at some
/// point) to `tmp`. Pages still backed by the file, never touched, or all zero in an
/// anonymous mapping read the same in the fresh mapping without a copy.
fn copy_own_pages(t: &Tracee, r: &Region, tmp: u64, files: &Files) -> Result<u64> {
    let pid = t.pid.as_raw();
    let pages = ((r.end - r.start) / PAGE) as usize;
    let mut raw = vec![0u8; pages * 8];
    files
        .pagemap
        .read_exact_at(&mut raw, r.start / PAGE * 8)
        .map_err(|e| proc_err(pid, "pagemap", e))?;
    let own = |i: usize| {
        let e = u64::from_ne_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        let present = e & (1 << 63) != 0;
        let swapped = e & (1 << 62) != 0;
        let file_page = e & (1 << 61) != 0;
        swapped || (present && !file_page)
    };
    let anon = r.file.is_none();
    let mut copied = 0;
    let mut i = 0;
    while i < pages {
        if !own(i) {
            i += 1;
            continue;
        }
        // A run of own pages, at most 1 MiB at a time.
        let mut j = i + 1;
        while j < pages && own(j) && j - i < 256 {
            j += 1;
        }
        let at = r.start + i as u64 * PAGE;
        let len = (j - i) * PAGE as usize;
        let mut data = vec![0u8; len];
        files
            .mem
            .read_exact_at(&mut data, at)
            .map_err(|e| ProcessError::Tracee {
                pid,
                what: format!("reading {len} bytes at {at:#x} to re-root them: {e}"),
            })?;
        for (k, page) in data.chunks(PAGE as usize).enumerate() {
            if anon && page.iter().all(|b| *b == 0) {
                continue;
            }
            t.write_mem(tmp + (i + k) as u64 * PAGE, page)?;
            copied += PAGE;
        }
        i = j;
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55eca28b5000-55eca28b6000 rw-p 00003000 08:01 1234 /usr/bin/python3.11
Size:                  4 kB
Anonymous:             4 kB
VmFlags: rd wr mr mw me ac
55ecd39f5000-55ecd4984000 rw-p 00000000 00:00 0 [heap]
Anonymous:         15896 kB
VmFlags: rd wr mr mw me ac
7fb5be080000-7fb5bf081000 rw-p 00000000 00:00 0 
Anonymous:         16388 kB
VmFlags: rd wr mr mw me ac
7fb5c0025000-7fb5c0029000 r--p 0001f000 08:01 99 /usr/lib/libtinfo.so.6.4
Anonymous:            16 kB
VmFlags: rd mr mw me ac
7fb5c0030000-7fb5c0031000 r-xp 00001000 08:01 99 /usr/lib/libtinfo.so.6.4
Anonymous:             0 kB
VmFlags: rd ex mr mw me
7fb5c0040000-7fb5c0041000 rw-p 00000000 00:00 0 [anon:jemalloc]
Anonymous:             4 kB
VmFlags: rd wr mr mw me ac
7fb5c0050000-7fb5c0051000 rw-p 00000000 00:00 0 
Anonymous:             4 kB
VmFlags: rd wr mr mw me ac dc
7fb5c0060000-7fb5c0061000 rw-s 00000000 00:05 7 /dev/zero (deleted)
Anonymous:             0 kB
VmFlags: rd wr sh mr mw me ms
7fb5c0070000-7fb5c0071000 rw-p 00001000 08:01 98 /tmp/gone (deleted)
Anonymous:             4 kB
VmFlags: rd wr mr mw me ac
7fb5c0080000-7fb5c0081000 rw-p 00001000 08:01 97 /opt/my lib.so
Anonymous:             4 kB
VmFlags: rd wr mr mw me ac
7ffd191a6000-7ffd191c7000 rw-p 00000000 00:00 0 [stack]
Anonymous:            84 kB
VmFlags: rd wr mr mw me gd ac
";

    #[test]
    fn plans_private_mappings_with_own_pages_only() {
        let all = plan(SMAPS, Tier::All);
        let starts: Vec<u64> = all.iter().map(|r| r.start).collect();
        assert_eq!(
            starts,
            vec![
                0x55eca28b5000,
                0x55ecd39f5000,
                0x7fb5be080000,
                0x7fb5c0025000,
                0x7fb5c0080000
            ]
        );
        assert_eq!(
            all[0].file,
            Some(("/usr/bin/python3.11".into(), 0x3000, 1234))
        );
        assert_eq!(all[0].prot, libc::PROT_READ | libc::PROT_WRITE);
        assert_eq!(all[1].file, None);
        assert_eq!(all[3].prot, libc::PROT_READ);
        assert_eq!(
            all[4].file.as_ref().map(|f| f.0.as_str()),
            Some("/opt/my lib.so")
        );
    }

    #[test]
    fn the_small_tier_leaves_big_mappings() {
        let small: Vec<u64> = plan(SMAPS, Tier::Small).iter().map(|r| r.start).collect();
        assert_eq!(small, vec![0x55eca28b5000, 0x7fb5c0025000, 0x7fb5c0080000]);
    }
}
