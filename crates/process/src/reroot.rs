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
//! stopped process, the process itself running the syscalls and copies in batches
//! ([`crate::batch`]): map a fresh region with guard pages around it (so it cannot
//! merge with a neighbour and its old ancestry), copy the pages that are the process's
//! own, set the protection, `mremap` it over the old one (atomic). A mapping that
//! cannot be swapped exactly is left as it was.

use crate::batch::{Area, Op};
use crate::error::{ProcessError, Result};
use crate::inspect::{maps_range, proc_read, vma_at, Vma};
use crate::pagemap::{self, PAGE};
use crate::tracee::Tracee;

/// VmFlags a swapped mapping reproduces exactly (a fresh private mapping made
/// read-write, then given the old protection). Anything else is left alone.
const REPRODUCIBLE_FLAGS: [&str; 9] = ["rd", "wr", "ex", "mr", "mw", "me", "ac", "sd", "mt"];
/// Mappings bigger than this are copied only in long idle moments: one such copy holds
/// the process (and a request that arrives meanwhile) for milliseconds.
pub const BIG_BYTES: u64 = 4 << 20;

/// Generations a mapping of `anon_bytes` may pile up before it is re-rooted.
///
/// Each generation costs a fork one link per mapping; a re-root costs a copy of the
/// mapping. Copying every `sqrt(bytes / 4 KiB)` generations balances the two (the sum of
/// link and copy costs is lowest there): libraries' data every 2, a 1 MiB arena every
/// 16, a 16 MiB heap every 64.
pub fn generations_before_reroot(anon_bytes: u64) -> u32 {
    ((anon_bytes / PAGE) as f64).sqrt().max(2.0) as u32
}

/// How much time the re-roots may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Between two requests: mappings up to [`BIG_BYTES`].
    Short,
    /// An agent waiting for its model: big mappings too.
    Long,
    /// Every mapping with a generation behind it, at once (tests: exercises re-rooting
    /// on every restore).
    Eager,
}

/// Fork generations behind a process, and at which one each of its mappings was last
/// re-rooted: how many live generations a mapping's kernel ancestry spans (its
/// "depth"), and so what a fork of the process costs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// Forks along this process's ancestry since its sandbox's first shell.
    pub generation: u32,
    /// The generation at which the mapping starting at this address was re-rooted.
    rerooted: std::collections::BTreeMap<u64, u32>,
    /// The generation at which a look at the mappings last found nothing due.
    checked: u32,
    /// ... but for big mappings, which wait for a long idle moment.
    big_waiting: bool,
}

impl Lineage {
    /// The lineage of a fork of a process with this one.
    pub fn forked(&self) -> Lineage {
        Lineage {
            generation: self.generation + 1,
            ..self.clone()
        }
    }

    fn depth(&self, start: u64) -> u32 {
        self.generation - self.rerooted.get(&start).copied().unwrap_or(0)
    }

    /// Whether a look at the mappings ([`Lineage::due`]) may find one due: not if the
    /// last look, in this generation, found none (for a long idle moment: none big).
    pub fn may_be_due(&self, idle: Idle) -> bool {
        self.generation > self.checked || (idle != Idle::Short && self.big_waiting)
    }

    /// The mappings of `regions` (a plan of the whole process) due a re-root, most
    /// overdue first; big ones only in a long `idle`. Nothing due: noted, so that
    /// [`Lineage::may_be_due`] waits for new generations.
    pub fn due(&mut self, regions: Vec<Region>, idle: Idle) -> Vec<Region> {
        type Overdue = Vec<(f64, Region)>;
        let (mut due, big): (Overdue, Overdue) = regions
            .into_iter()
            .filter_map(|r| {
                let every = match idle {
                    Idle::Eager => 1,
                    _ => generations_before_reroot(r.anon_bytes),
                };
                let over = self.depth(r.start) as f64 / every as f64;
                (over >= 1.0).then_some((over, r))
            })
            .partition(|(_, r)| idle != Idle::Short || r.anon_bytes <= BIG_BYTES);
        if due.is_empty() {
            self.checked = self.generation;
            self.big_waiting = !big.is_empty();
        }
        due.sort_by(|a, b| b.0.total_cmp(&a.0));
        due.into_iter().map(|(_, r)| r).collect()
    }

    /// Notes that the mappings starting at `starts` have just been re-rooted.
    pub fn rerooted(&mut self, starts: impl IntoIterator<Item = u64>) {
        for s in starts {
            self.rerooted.insert(s, self.generation);
        }
    }
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

impl Region {
    /// Whether `v` is this region placed at `at`: same length, same backing (the same
    /// file at the same offset, or anonymous memory).
    fn mapped_as(&self, v: &Vma, at: u64) -> bool {
        (v.start, v.end) == (at, at + (self.end - self.start))
            && match &self.file {
                Some((_, off, ino)) => (v.offset, v.inode) == (*off, *ino),
                None => v.inode == 0,
            }
    }
}

/// The mappings of a process (its smaps text) that have pages of their own and can be
/// re-rooted exactly.
pub fn plan(smaps: &str) -> Vec<Region> {
    let mut out = Vec::new();
    let mut cur: Option<(Region, bool)> = None;
    let flush = |c: Option<(Region, bool)>, out: &mut Vec<Region>| {
        if let Some((r, true)) = c {
            if r.anon_bytes > 0 {
                out.push(r);
            }
        }
    };
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = Some(first)
            .filter(|f| !f.ends_with(':'))
            .and_then(maps_range)
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
        } else if first == "ProtectionKey:" && f.next() != Some("0") {
            // A fresh mapping would get key 0: not reproducible.
            cur = None;
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

/// Whether this kernel can re-root: mappings are checked with PROCMAP_QUERY (Linux
/// 6.11+); without it every mapping is left alone.
pub fn supported() -> bool {
    let here = 0u8;
    std::fs::File::open("/proc/self/maps")
        .ok()
        .and_then(|m| vma_at(&m, &here as *const u8 as u64))
        .is_some()
}

/// The mappings of `pid` that can be re-rooted (see [`plan`]).
pub fn plan_for(pid: i32) -> Result<Vec<Region>> {
    Ok(plan(&proc_read(pid, "smaps")?))
}

/// What a [`reroot`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rerooted {
    pub regions: usize,
    /// Mappings left as they were (their file could not be reopened as the same file).
    pub skipped: usize,
    pub bytes_copied: u64,
}

/// Regions per slice of a [`reroot`], and anonymous bytes: a slice is one reservation
/// and two batches, a couple of milliseconds.
const SLICE_REGIONS: usize = 64;
const SLICE_BYTES: u64 = 2 << 20;
/// madvise(2) advice (Linux 5.14+; not in every libc crate).
const MADV_POPULATE_WRITE: u64 = 23;

/// Swaps each of `regions` of the stopped `t` for a fresh copy (see the module doc), a
/// slice at a time, until all are done or `budget` has passed; returns how many regions
/// it went through. Memory contents never change: a region that cannot be swapped
/// exactly is left as it was.
pub fn reroot(
    t: &mut Tracee,
    regions: &[Region],
    budget: std::time::Duration,
) -> Result<(usize, Rerooted)> {
    t.colocated(|t| reroot_here(t, regions, budget))
}

fn reroot_here(
    t: &mut Tracee,
    regions: &[Region],
    budget: std::time::Duration,
) -> Result<(usize, Rerooted)> {
    let started = std::time::Instant::now();
    let pid = t.pid.as_raw();
    let open = |file: &'static str| {
        std::fs::File::open(format!("/proc/{pid}/{file}"))
            .map_err(|e| ProcessError::proc(pid, file, e))
    };
    let files = Files {
        maps: &open("maps")?,
        pagemap: &open("pagemap")?,
    };
    let area = Area::map(t)?;
    let mut done = Rerooted::default();
    let mut n = 0;
    let res = (|| {
        while n < regions.len() && (n == 0 || started.elapsed() < budget) {
            let mut k = 0;
            let mut bytes = 0;
            while n + k < regions.len() && k < SLICE_REGIONS && (k == 0 || bytes < SLICE_BYTES) {
                bytes += regions[n + k].anon_bytes;
                k += 1;
            }
            let slice = swap_slice(t, &area, &regions[n..n + k], &files)?;
            done.regions += slice.regions;
            done.skipped += slice.skipped;
            done.bytes_copied += slice.bytes_copied;
            n += k;
        }
        Ok(())
    })();
    area.release(t)?;
    res.map(|_| (n, done))
}

/// The target's /proc files a re-root reads.
struct Files<'a> {
    maps: &'a std::fs::File,
    pagemap: &'a std::fs::File,
}

/// One slice: fresh mappings for `regions` inside one PROT_NONE reservation (a guard
/// page around each, so none merges with a neighbour and its ancestry), checked, filled
/// with the process's own pages, protected, and moved over the old ones.
fn swap_slice(t: &mut Tracee, area: &Area, regions: &[Region], files: &Files) -> Result<Rerooted> {
    let mut out = Rerooted::default();
    // Still what was planned? (A plan is carried out over several idle moments.)
    let todo: Vec<&Region> = regions
        .iter()
        .filter(|r| {
            let ok = vma_at(files.maps, r.start).is_some_and(|v| r.mapped_as(&v, r.start));
            out.skipped += usize::from(!ok);
            ok
        })
        .collect();
    if todo.is_empty() {
        return Ok(out);
    }
    let total: u64 = todo.iter().map(|r| r.end - r.start + PAGE).sum::<u64>() + PAGE;
    let none = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE) as u64;
    let base = t.call(
        "mmap",
        libc::SYS_mmap,
        &[0, total, libc::PROT_NONE as u64, none, u64::MAX, 0],
    )? as u64;
    let res = fill_and_move(t, area, &todo, base, files);
    t.call("munmap", libc::SYS_munmap, &[base, total])?;
    let (moved, bytes) = res?;
    out.regions += moved;
    out.skipped += todo.len() - moved;
    out.bytes_copied += bytes;
    Ok(out)
}

fn fill_and_move(
    t: &mut Tracee,
    area: &Area,
    todo: &[&Region],
    base: u64,
    files: &Files,
) -> Result<(usize, u64)> {
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let fixed = (libc::MAP_PRIVATE | libc::MAP_FIXED) as u64;
    let mut tmps = Vec::with_capacity(todo.len());
    let mut at = base + PAGE;
    let mut ops = Vec::new();
    let mut data = 0u64;
    for r in todo {
        let len = r.end - r.start;
        tmps.push(at);
        match &r.file {
            None => ops.push(Op::syscall(
                libc::SYS_mmap,
                &[at, len, rw, fixed | libc::MAP_ANONYMOUS as u64, u64::MAX, 0],
            )),
            Some((path, off, _)) => {
                let mut c = path.as_bytes().to_vec();
                c.push(0);
                let p = area.put_data(t, data, &c)?;
                data += c.len() as u64;
                let flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
                ops.push(Op::syscall(libc::SYS_openat, &[libc::AT_FDCWD as u64, p, flags]).saved());
                ops.push(Op::syscall(libc::SYS_mmap, &[at, len, rw, fixed, 0, *off]).fd_in_arg4());
                ops.push(Op::syscall(libc::SYS_close, &[0]).fd_in_arg0());
            }
        }
        at += len + PAGE;
    }
    area.run(t, &ops)?;
    // The fresh mapping must be there, and map the very file (reopened by path).
    let good: Vec<(&Region, u64)> = todo
        .iter()
        .zip(&tmps)
        .filter(|(r, tmp)| vma_at(files.maps, **tmp).is_some_and(|v| r.mapped_as(&v, **tmp)))
        .map(|(r, tmp)| (*r, *tmp))
        .collect();
    let mut ops = Vec::new();
    let mut bytes = 0;
    for (r, tmp) in &good {
        for (off, len) in own_runs(r, files.pagemap, t.pid.as_raw())? {
            // Faulting the pages in in one call beats a trap per page during the copy.
            ops.push(Op::syscall(
                libc::SYS_madvise,
                &[tmp + off, len, MADV_POPULATE_WRITE],
            ));
            ops.push(Op::copy(tmp + off, r.start + off, len));
            bytes += len;
        }
        let len = r.end - r.start;
        if r.prot as u64 != rw {
            ops.push(Op::syscall(libc::SYS_mprotect, &[*tmp, len, r.prot as u64]));
        }
        let mv = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
        ops.push(Op::syscall(
            libc::SYS_mremap,
            &[*tmp, len, len, mv, r.start],
        ));
    }
    area.run(t, &ops)?;
    // What moved (the old mapping is gone then), with the right protection.
    let mut moved = 0;
    for (r, tmp) in &good {
        let Some(v) = vma_at(files.maps, r.start) else {
            continue;
        };
        if v.start != r.start || vma_at(files.maps, *tmp).is_some_and(|x| x.start == *tmp) {
            continue;
        }
        moved += 1;
        if v.prot != r.prot as u64 {
            t.call(
                "mprotect",
                libc::SYS_mprotect,
                &[r.start, r.end - r.start, r.prot as u64],
            )?;
        }
    }
    Ok((moved, bytes))
}

/// Runs (offset, length) of the pages of `r` that are the process's own: anonymous
/// (written at some point), not the shared zero page. Pages still backed by the file,
/// never touched, or zero read the same in a fresh mapping without a copy.
fn own_runs(r: &Region, pagemap: &std::fs::File, pid: i32) -> Result<Vec<(u64, u64)>> {
    let pages = ((r.end - r.start) / PAGE) as usize;
    let entries = pagemap::read(pagemap, r.start, pages)
        .map_err(|e| ProcessError::proc(pid, "pagemap", e))?;
    let zero = pagemap::zero_pfn();
    let own = |i: usize| {
        let e = entries[i];
        let (present, file_page) = (e & pagemap::PRESENT != 0, e & pagemap::FILE != 0);
        e & pagemap::SWAPPED != 0 || (present && !file_page && Some(e & pagemap::PFN) != zero)
    };
    let mut runs = Vec::new();
    let mut i = 0;
    while i < pages {
        if !own(i) {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < pages && own(j) {
            j += 1;
        }
        runs.push((i as u64 * PAGE, (j - i) as u64 * PAGE));
        i = j;
    }
    Ok(runs)
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
ProtectionKey:         0
VmFlags: rd wr mr mw me ac
7fb5c0090000-7fb5c0091000 rw-p 00000000 00:00 0 
Anonymous:             4 kB
ProtectionKey:         1
VmFlags: rd wr mr mw me ac
7ffd191a6000-7ffd191c7000 rw-p 00000000 00:00 0 [stack]
Anonymous:            84 kB
VmFlags: rd wr mr mw me gd ac
";

    #[test]
    fn kernels_with_procmap_query_can_re_root() {
        let release = nix::sys::utsname::uname().unwrap();
        let release = release.release().to_string_lossy();
        let mut v = release
            .split(['.', '-'])
            .map(|x| x.parse::<u32>().unwrap_or(0));
        let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        if (major, minor) < (6, 11) {
            eprintln!("skipped: Linux {release} has no PROCMAP_QUERY; re-rooting is off here");
            return;
        }
        assert!(supported(), "Linux {release} should answer PROCMAP_QUERY");
    }

    #[test]
    fn plans_private_mappings_with_own_pages_only() {
        let all = plan(SMAPS);
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
    fn small_mappings_fall_due_often_big_ones_rarely_and_only_in_long_idle() {
        assert_eq!(generations_before_reroot(4096), 2);
        assert_eq!(generations_before_reroot(1 << 20), 16);
        assert_eq!(generations_before_reroot(16 << 20), 64);
        let mut l = Lineage::default();
        let mut copies = std::collections::BTreeMap::<u64, u32>::new();
        for _ in 0..128 {
            l = l.forked();
            if !l.may_be_due(Idle::Long) {
                continue;
            }
            let due = l.due(plan(SMAPS), Idle::Long);
            for r in &due {
                *copies.entry(r.start).or_default() += 1;
            }
            l.rerooted(due.iter().map(|r| r.start));
        }
        // The 4 KiB data mapping every 2 generations, the 16 MiB ones every 64.
        assert_eq!(copies[&0x55eca28b5000], 64);
        assert_eq!(copies[&0x7fb5be080000], 2);
        // Deepest first; big ones wait for a long idle moment.
        let mut deep = Lineage::default();
        for _ in 0..64 {
            deep = deep.forked();
        }
        let due = deep.due(plan(SMAPS), Idle::Short);
        assert!(due.iter().all(|r| r.anon_bytes <= BIG_BYTES));
        assert_eq!(due[0].anon_bytes, 4096);
        assert_eq!(deep.clone().due(plan(SMAPS), Idle::Long).len(), 5);
        // Nothing due: no new look before the next generation.
        let mut fresh = deep.clone();
        fresh.rerooted(plan(SMAPS).iter().map(|r| r.start));
        assert!(fresh.due(plan(SMAPS), Idle::Long).is_empty());
        assert!(!fresh.may_be_due(Idle::Long));
        assert!(fresh.forked().may_be_due(Idle::Short));
        // Only big ones due: looked at again in a long idle moment, not before.
        let mut only_big = deep.clone();
        only_big.rerooted(due.iter().map(|r| r.start));
        assert!(only_big.due(plan(SMAPS), Idle::Short).is_empty());
        assert!(!only_big.may_be_due(Idle::Short));
        assert!(only_big.may_be_due(Idle::Long));
        assert_eq!(only_big.due(plan(SMAPS), Idle::Long).len(), 2);
    }
}
