//! Reads what a process holds (threads, mappings, descriptors, cwd) and decides whether
//! a fork of it is an exact, independent copy; if not, says why, naming the culprit.

use crate::error::{ProcessError, Result};
use std::path::PathBuf;

/// An open file the process must reopen on its new root after a move: a fork shares
/// the open file (and its offset) with the template, and the old one points into the
/// template's frozen layers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenFile {
    pub fd: i32,
    pub path: PathBuf,
    /// open(2) flags as the kernel reports them, without creation flags.
    pub flags: i32,
    pub pos: u64,
}

/// What has to be carried over when a copy of the process moves to another root.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Capture {
    pub pid: i32,
    pub comm: String,
    pub cwd: PathBuf,
    pub files: Vec<OpenFile>,
}

/// What the caller knows about the sandbox around the process.
pub struct Context<'a> {
    /// Mount id of the sandbox root (the overlay whose files are checkpointed).
    pub root_mnt: u64,
    /// Inodes of pipes that belong to the session (the daemon's channels to the shell);
    /// sharing them between copies is what keeps the session working.
    pub session_pipes: &'a [u64],
}

/// A /proc file's text, read in one go: `fs::read_to_string` stats the file (size 0)
/// and then reads 32, 32, 64, 128 ... bytes at a time, a dozen syscalls on the
/// checkpoint's path where three do.
pub fn read_proc(path: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(2 * len, 0);
        }
        match f.read(&mut buf[len..])? {
            0 => break,
            n => len += n,
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

pub(crate) fn proc_read(pid: i32, file: &'static str) -> Result<String> {
    read_proc(&format!("/proc/{pid}/{file}")).map_err(|e| ProcessError::proc(pid, file, e))
}

/// Value of `key:` in a /proc key-value file (status, fdinfo).
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

/// Value of `key:` in /proc/PID/status (None if the process is gone).
pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let status = proc_read(pid, "status").ok()?;
    field(&status, key).map(str::to_string)
}

/// When a process started (clock ticks after boot, /proc/PID/stat field 22): with the
/// pid it names one process for good, since pids are reused.
pub fn start_time(pid: i32) -> Option<u64> {
    parse_start_time(&proc_read(pid, "stat").ok()?)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // comm (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The addresses of a /proc/PID/maps line's first field (`start-end`, hex).
pub(crate) fn maps_range(field: &str) -> Option<(u64, u64)> {
    let (a, b) = field.split_once('-')?;
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

/// A writable shared mapping in /proc/PID/maps, if any: writes through it from the live
/// copy would show up in the template.
pub fn shared_writable_mapping(maps: &str) -> Option<String> {
    maps.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let (range, perms) = (it.next()?, it.next()?);
        let p = perms.as_bytes();
        if p.len() == 4 && p[1] == b'w' && p[3] == b's' {
            let path = it.nth(3).map(str::to_string);
            Some(path.unwrap_or_else(|| format!("anonymous shared memory at {range}")))
        } else {
            None
        }
    })
}

/// A mapping as PROCMAP_QUERY reports it; `prot` in PROT_* bits (read 1, write 2,
/// exec 4: the kernel's PROCMAP_QUERY_VMA_* bits match them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Vma {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub inode: u64,
    pub prot: u64,
}

/// `struct procmap_query` (linux/fs.h, Linux 6.11+).
#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

const PROCMAP_QUERY_VMA_WRITABLE: u64 = 0x02;
const PROCMAP_QUERY_VMA_SHARED: u64 = 0x08;
const PROCMAP_QUERY_COVERING_OR_NEXT_VMA: u64 = 0x10;

/// Runs PROCMAP_QUERY (Linux 6.11+) on an open /proc/PID/maps for `q`, the mapping's
/// name going into `name` when given.
fn procmap_query(
    maps: &std::fs::File,
    mut q: ProcmapQuery,
    name: Option<&mut [u8]>,
) -> nix::Result<ProcmapQuery> {
    use std::os::fd::AsRawFd;
    q.size = std::mem::size_of::<ProcmapQuery>() as u64;
    if let Some(buf) = name {
        q.vma_name_size = buf.len() as u32;
        q.vma_name_addr = buf.as_mut_ptr() as u64;
    }
    let req = nix::request_code_readwrite!(b'f', 17, std::mem::size_of::<ProcmapQuery>());
    // SAFETY: `q` is a properly sized procmap_query; its only buffer, if any, is `name`,
    // which outlives the call.
    let rc = unsafe { libc::ioctl(maps.as_raw_fd(), req as _, &mut q as *mut ProcmapQuery) };
    nix::errno::Errno::result(rc).map(|_| q)
}

/// The mapping that covers `addr`, from PROCMAP_QUERY on an open /proc/PID/maps.
/// `None` without the ioctl or mapping.
pub(crate) fn vma_at(maps: &std::fs::File, addr: u64) -> Option<Vma> {
    let q = ProcmapQuery {
        query_addr: addr,
        ..Default::default()
    };
    let q = procmap_query(maps, q, None).ok()?;
    (q.vma_start <= addr).then_some(Vma {
        start: q.vma_start,
        end: q.vma_end,
        offset: q.vma_offset,
        inode: q.inode,
        prot: q.vma_flags & 7,
    })
}

/// Asks the kernel for the first writable shared mapping of `pid` (PROCMAP_QUERY: one
/// ioctl instead of reading and parsing maps, which is most of the cost of an inspect).
/// `None` when the kernel does not have the ioctl: read maps instead.
fn query_shared_writable(pid: i32) -> Option<Option<String>> {
    let maps = std::fs::File::open(format!("/proc/{pid}/maps")).ok()?;
    let mut name = vec![0u8; 4096];
    let q = ProcmapQuery {
        query_flags: PROCMAP_QUERY_VMA_WRITABLE
            | PROCMAP_QUERY_VMA_SHARED
            | PROCMAP_QUERY_COVERING_OR_NEXT_VMA,
        ..Default::default()
    };
    let q = match procmap_query(&maps, q, Some(&mut name)) {
        Ok(q) => q,
        Err(nix::errno::Errno::ENOENT) => return Some(None),
        Err(_) => return None,
    };
    let len = (q.vma_name_size as usize).saturating_sub(1).min(name.len());
    Some(Some(if len == 0 {
        format!(
            "anonymous shared memory at {:x}-{:x}",
            q.vma_start, q.vma_end
        )
    } else {
        String::from_utf8_lossy(&name[..len]).into_owned()
    }))
}

#[derive(Debug, PartialEq, Eq)]
pub enum FdKind {
    /// Keep as is (a session pipe, a character device).
    Share,
    /// Reopen by path on the new root.
    Reopen(OpenFile),
    /// Cannot be carried over exactly: why.
    Refuse(String),
}

/// Classifies one descriptor from its /proc link target, its fdinfo, and its file type.
pub fn classify_fd(
    fd: i32,
    target: &str,
    fdinfo: &str,
    file_type: Option<std::fs::FileType>,
    ctx: &Context,
) -> FdKind {
    use std::os::unix::fs::FileTypeExt;
    if let Some(ino) = target
        .strip_prefix("pipe:[")
        .and_then(|s| s.strip_suffix(']'))
    {
        return match ino.parse::<u64>() {
            Ok(i) if ctx.session_pipes.contains(&i) => FdKind::Share,
            _ => FdKind::Refuse(format!(
                "fd {fd} is a pipe, which a copy would share with the live process"
            )),
        };
    }
    if target.starts_with("socket:") {
        return FdKind::Refuse(format!(
            "fd {fd} is a socket ({target}); a connection cannot be in two places at once"
        ));
    }
    if let Some(what) = target.strip_prefix("anon_inode:") {
        return FdKind::Refuse(format!(
            "fd {fd} is a kernel object ({what}) that a copy would share with the live process"
        ));
    }
    if target.ends_with(" (deleted)") {
        return FdKind::Refuse(format!("fd {fd} is a deleted file ({target})"));
    }
    let mnt: u64 = field(fdinfo, "mnt_id")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let flags = field(fdinfo, "flags")
        .and_then(|v| i32::from_str_radix(v, 8).ok())
        .unwrap_or(0);
    let pos = field(fdinfo, "pos")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let is_dir = file_type.is_some_and(|t| t.is_dir());
    let is_dev = file_type.is_some_and(|t| t.is_char_device() || t.is_block_device());
    if mnt != ctx.root_mnt {
        if is_dev {
            return FdKind::Share;
        }
        return FdKind::Refuse(format!(
            "fd {fd} is {target}, outside the sandbox's checkpointed root (/dev, /proc and /sys are not captured)"
        ));
    }
    if is_dir && pos != 0 {
        return FdKind::Refuse(format!(
            "fd {fd} is directory {target} part-way through a listing"
        ));
    }
    let strip = libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY;
    FdKind::Reopen(OpenFile {
        fd,
        path: PathBuf::from(target),
        flags: flags & !strip,
        pos,
    })
}

/// Inspects `pid` and returns what a move needs, or why it cannot be captured exactly.
pub fn inspect(pid: i32, ctx: &Context) -> Result<Capture> {
    let status = proc_read(pid, "status")?;
    let comm = field(&status, "Name").unwrap_or("?").to_string();
    let refuse = |reason: String, hint: &str| ProcessError::Unsupported {
        pid,
        comm: comm.clone(),
        reason,
        hint: hint.to_string(),
    };
    let threads: usize = field(&status, "Threads")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    if threads > 1 {
        return Err(refuse(
            format!("it has {threads} threads and a process fork copies only one"),
            "Join or stop the other threads before the checkpoint (e.g. shut down thread pools)",
        ));
    }
    let shared = match query_shared_writable(pid) {
        Some(found) => found,
        None => shared_writable_mapping(&proc_read(pid, "maps")?),
    };
    if let Some(m) = shared {
        return Err(refuse(
            format!("it has a writable shared mapping of {m}, which the checkpoint would share with the live process"),
            "Unmap it (or map it MAP_PRIVATE) before the checkpoint",
        ));
    }
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
        .map_err(|e| ProcessError::proc(pid, "cwd", e))?;
    if cwd.to_string_lossy().ends_with(" (deleted)") {
        return Err(refuse(
            format!("its working directory {} was deleted", cwd.display()),
            "cd to an existing directory before the checkpoint",
        ));
    }
    let mut files = Vec::new();
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| ProcessError::proc(pid, "fd", e))?;
    for e in dir.flatten() {
        let Ok(fd) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue; // closed meanwhile
        };
        let target = target.to_string_lossy().into_owned();
        // Pipes, sockets and kernel objects are told apart by their link alone (the
        // shell's own descriptors are pipes): no fdinfo or stat for them.
        let by_link = ["pipe:", "socket:", "anon_inode:"]
            .iter()
            .any(|p| target.starts_with(p));
        let (fdinfo, ft) = if by_link {
            (String::new(), None)
        } else {
            (
                read_proc(&format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default(),
                std::fs::metadata(e.path()).ok().map(|m| m.file_type()),
            )
        };
        match classify_fd(fd, &target, &fdinfo, ft, ctx) {
            FdKind::Share => {}
            FdKind::Reopen(f) => files.push(f),
            FdKind::Refuse(why) => {
                return Err(refuse(
                    why,
                    "Close it before the checkpoint (in bash: `exec N>&-`)",
                ))
            }
        }
    }
    files.sort_by_key(|f| f.fd);
    Ok(Capture {
        pid,
        comm,
        cwd,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_counts_fields_after_the_last_paren() {
        let stat =
            "42 (we (ird) x) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
    }

    const CTX: Context = Context {
        root_mnt: 40,
        session_pipes: &[7001, 7002],
    };

    #[test]
    fn session_pipes_are_shared_other_pipes_refused() {
        assert_eq!(classify_fd(0, "pipe:[7001]", "", None, &CTX), FdKind::Share);
        assert!(matches!(
            classify_fd(3, "pipe:[9]", "", None, &CTX),
            FdKind::Refuse(_)
        ));
    }

    #[test]
    fn sockets_anon_inodes_and_deleted_files_are_refused() {
        for t in ["socket:[12]", "anon_inode:[eventpoll]", "/tmp/x (deleted)"] {
            match classify_fd(5, t, "mnt_id:\t40\n", None, &CTX) {
                FdKind::Refuse(why) => assert!(why.contains("fd 5"), "{why}"),
                k => panic!("{t}: {k:?}"),
            }
        }
    }

    #[test]
    fn files_on_the_root_are_reopened_without_creation_flags() {
        let info = "pos:\t17\nflags:\t02103101\nmnt_id:\t40\n";
        match classify_fd(4, "/tmp/log", info, None, &CTX) {
            FdKind::Reopen(f) => {
                assert_eq!(f.pos, 17);
                assert_eq!(f.flags & libc::O_TRUNC, 0);
                assert_eq!(f.flags & libc::O_CREAT, 0);
                assert_ne!(f.flags & libc::O_APPEND, 0);
                assert_ne!(f.flags & libc::O_CLOEXEC, 0);
                assert_eq!(f.flags & libc::O_ACCMODE, libc::O_WRONLY);
            }
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn files_off_the_root_are_refused() {
        let info = "pos:\t0\nflags:\t02\nmnt_id:\t99\n";
        assert!(matches!(
            classify_fd(4, "/dev/shm/x", info, None, &CTX),
            FdKind::Refuse(_)
        ));
    }

    #[test]
    fn the_kernel_finds_shared_writable_mappings_too() {
        let me = std::process::id() as i32;
        let Some(before) = query_shared_writable(me) else {
            eprintln!(
                "skipped: this kernel has no PROCMAP_QUERY (Linux 6.11+); maps is read instead"
            );
            return;
        };
        assert_eq!(before, None);
        let f = tempfile_with(8192);
        // SAFETY: a fresh shared mapping of our own file, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&f.1),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let found = query_shared_writable(me).unwrap();
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(p, 8192) };
        std::fs::remove_file(&f.0).ok();
        assert_eq!(found.as_deref(), Some(f.0.to_str().unwrap()));
        assert_eq!(query_shared_writable(me).unwrap(), None);
    }

    fn tempfile_with(len: u64) -> (std::path::PathBuf, std::fs::File) {
        let path = std::env::temp_dir().join(format!("dbx-map-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(len).unwrap();
        (path, f)
    }

    #[test]
    fn shared_writable_mappings_are_found() {
        let maps = "7f00-7f01 r--p 0 08:01 5 /usr/lib/libc.so\n7f02-7f03 rw-s 0 00:2a 9 /work/db\n";
        assert_eq!(shared_writable_mapping(maps).as_deref(), Some("/work/db"));
        assert_eq!(
            shared_writable_mapping("7f00-7f01 r--s 0 08:01 5 /x\n"),
            None
        );
        assert!(shared_writable_mapping("1-2 rw-s 0 00:01 3\n")
            .unwrap()
            .contains("anonymous"));
    }
}
