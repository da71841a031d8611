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
