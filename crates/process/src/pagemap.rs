//! /proc/PID/pagemap: one 64-bit entry per virtual page of a process.

use std::os::unix::fs::FileExt;

pub const PAGE: u64 = 4096;
pub const PRESENT: u64 = 1 << 63;
pub const SWAPPED: u64 = 1 << 62;
/// A file page or shared anonymous memory.
pub const FILE: u64 = 1 << 61;
/// Mapped by this process alone.
pub const EXCLUSIVE: u64 = 1 << 56;
pub const PFN: u64 = (1 << 55) - 1;

/// The entries of the `pages` pages from `start` (page-aligned).
pub fn read(pagemap: &std::fs::File, start: u64, pages: usize) -> std::io::Result<Vec<u64>> {
    let mut raw = vec![0u8; pages * 8];
    pagemap.read_exact_at(&mut raw, start / PAGE * 8)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
        .collect())
}

/// The frame number of the kernel's shared zero page, as pagemap shows it to us (a
/// read of untouched anonymous memory maps it). `None` when pagemap hides frame numbers.
pub fn zero_pfn() -> Option<u64> {
    static ZERO: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *ZERO.get_or_init(|| {
        let len = PAGE as usize;
        let (prot, flags) = (libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS);
        // SAFETY: a fresh private anonymous page, unmapped below; nothing else uses it.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: `p` is the readable page just mapped; the read maps the zero page.
        let _ = unsafe { std::ptr::read_volatile(p as *const u8) };
        let entry = pagemap_entry(p as u64);
        // SAFETY: unmaps exactly the page mapped above.
        unsafe { libc::munmap(p, len) };
        let e = entry?;
        (e & PRESENT != 0 && e & PFN != 0).then_some(e & PFN)
    })
}

fn pagemap_entry(addr: u64) -> Option<u64> {
    let f = std::fs::File::open("/proc/self/pagemap").ok()?;
    read(&f, addr & !(PAGE - 1), 1).ok()?.first().copied()
}
