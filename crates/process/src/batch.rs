//! Many syscalls and memory copies run by the stopped process itself, in one go.
//!
//! An injected syscall costs a ptrace round trip (set registers, run to the syscall's
//! entry and exit, read registers): ~20 µs. Re-rooting a process takes thousands of
//! syscalls and copies tens of MB inside it, so a small stub placed in a scratch
//! mapping runs a table of operations and traps when done: one round trip per batch,
//! and copies at memcpy speed in the process's own address space.

use crate::error::{ProcessError, Result};
use crate::pagemap::PAGE;
use crate::tracee::Tracee;

/// x86-64 machine code: for each 64-byte entry of the table at rbx (r12 entries):
/// load nr and six arguments, run the syscall (or, with [`COPY`], `rep movsb` a0 <- a1,
/// a2 bytes), store the result in the entry's last word; trap at the end.
/// Flags in the nr word: [`SAVE`] keeps the result in r14, [`FD_ARG4`] / [`FD_ARG0`]
/// take argument 4 / 0 from r14 (an fd opened by an earlier entry).
///
/// ```text
/// start: cld
/// next:  test r12, r12 ; jz done
///        mov r15, [rbx] ; mov rax, r15
///        btr rax, 62 ; btr rax, 61 ; btr rax, 60 ; btr rax, 59
///        mov rdi, [rbx+8] ; mov rsi, [rbx+16] ; mov rdx, [rbx+24]
///        mov r10, [rbx+32] ; mov r8, [rbx+40] ; mov r9, [rbx+48]
///        bt r15, 61 ; cmovc r8, r14
///        bt r15, 60 ; cmovc rdi, r14
///        bt r15, 59 ; jc copy
///        syscall ; jmp store
/// copy:  mov rcx, rdx ; rep movsb ; xor eax, eax
/// store: mov [rbx+56], rax
///        bt r15, 62 ; cmovc r14, rax
///        add rbx, 64 ; dec r12 ; jmp next
/// done:  int3
/// ```
const STUB: [u8; 115] = [
    0xfc, 0x4d, 0x85, 0xe4, 0x74, 0x6c, 0x4c, 0x8b, 0x3b, 0x4c, 0x89, 0xf8, 0x48, 0x0f, 0xba, 0xf0,
    0x3e, 0x48, 0x0f, 0xba, 0xf0, 0x3d, 0x48, 0x0f, 0xba, 0xf0, 0x3c, 0x48, 0x0f, 0xba, 0xf0, 0x3b,
    0x48, 0x8b, 0x7b, 0x08, 0x48, 0x8b, 0x73, 0x10, 0x48, 0x8b, 0x53, 0x18, 0x4c, 0x8b, 0x53, 0x20,
    0x4c, 0x8b, 0x43, 0x28, 0x4c, 0x8b, 0x4b, 0x30, 0x49, 0x0f, 0xba, 0xe7, 0x3d, 0x4d, 0x0f, 0x42,
    0xc6, 0x49, 0x0f, 0xba, 0xe7, 0x3c, 0x49, 0x0f, 0x42, 0xfe, 0x49, 0x0f, 0xba, 0xe7, 0x3b, 0x72,
    0x04, 0x0f, 0x05, 0xeb, 0x07, 0x48, 0x89, 0xd1, 0xf3, 0xa4, 0x31, 0xc0, 0x48, 0x89, 0x43, 0x38,
    0x49, 0x0f, 0xba, 0xe7, 0x3e, 0x4c, 0x0f, 0x42, 0xf0, 0x48, 0x83, 0xc3, 0x40, 0x49, 0xff, 0xcc,
    0xeb, 0x8f, 0xcc,
];

const SAVE: u64 = 1 << 62;
const FD_ARG4: u64 = 1 << 61;
const FD_ARG0: u64 = 1 << 60;
const COPY: u64 = 1 << 59;

/// One entry of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    nr: u64,
    args: [u64; 6],
}

impl Op {
    pub fn syscall(nr: i64, args: &[u64]) -> Op {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        Op {
            nr: nr as u64,
            args: a,
        }
    }

    /// Copies `len` bytes from `src` to `dst` in the process (result 0).
    pub fn copy(dst: u64, src: u64, len: u64) -> Op {
        Op {
            nr: COPY,
            args: [dst, src, len, 0, 0, 0],
        }
    }

    /// Keeps the result for a later [`Op::fd_in_arg4`] / [`Op::fd_in_arg0`].
    pub fn saved(mut self) -> Op {
        self.nr |= SAVE;
        self
    }

    /// Argument 4 (mmap's fd) is the last saved result.
    pub fn fd_in_arg4(mut self) -> Op {
        self.nr |= FD_ARG4;
        self
    }

    /// Argument 0 (close's fd) is the last saved result.
    pub fn fd_in_arg0(mut self) -> Op {
        self.nr |= FD_ARG0;
        self
    }

    fn encode(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[..8].copy_from_slice(&self.nr.to_ne_bytes());
        for (i, a) in self.args.iter().enumerate() {
            b[8 + i * 8..16 + i * 8].copy_from_slice(&a.to_ne_bytes());
        }
        b
    }
}

/// A scratch mapping in the process holding the stub, its table and data (strings the
/// syscalls point to). Unmapped by [`Area::release`].
pub struct Area {
    pub addr: u64,
    len: u64,
}

/// Table entries an [`Area`] holds; bigger batches run in parts.
const TABLE_OPS: u64 = 4096;
/// Bytes of data an [`Area`] holds after the table.
pub const DATA_BYTES: u64 = 64 << 10;

impl Area {
    pub fn map(t: &mut Tracee) -> Result<Area> {
        let len = PAGE + TABLE_OPS * 64 + DATA_BYTES;
        let prot = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let addr = t.call("mmap", libc::SYS_mmap, &[0, len, prot, flags, u64::MAX, 0])? as u64;
        let area = Area { addr, len };
        if let Err(e) = t.write_mem(addr, &STUB) {
            area.release(t)?;
            return Err(e);
        }
        Ok(area)
    }

    fn table(&self) -> u64 {
        self.addr + PAGE
    }

    /// Where data written with [`Area::put_data`] starts.
    pub fn data(&self) -> u64 {
        self.table() + TABLE_OPS * 64
    }

    /// Writes `bytes` at `offset` into the data part; their address in the process.
    pub fn put_data(&self, t: &Tracee, offset: u64, bytes: &[u8]) -> Result<u64> {
        if offset + bytes.len() as u64 > DATA_BYTES {
            return Err(ProcessError::Tracee {
                pid: t.pid.as_raw(),
                what: format!(
                    "batch data of {} bytes does not fit",
                    offset + bytes.len() as u64
                ),
            });
        }
        t.write_mem(self.data() + offset, bytes)?;
        Ok(self.data() + offset)
    }

    /// Runs `ops` in the process; their raw results (`-errno` on error).
    pub fn run(&self, t: &mut Tracee, ops: &[Op]) -> Result<Vec<i64>> {
        let mut out = Vec::with_capacity(ops.len());
        for part in ops.chunks(TABLE_OPS as usize) {
            let table: Vec<u8> = part.iter().flat_map(|o| o.encode()).collect();
            t.write_mem(self.table(), &table)?;
            t.run_code(
                self.addr,
                &[(Reg::Rbx, self.table()), (Reg::R12, part.len() as u64)],
            )?;
            let done = t.read_mem(self.table(), table.len())?;
            out.extend(
                done.chunks(64)
                    .map(|e| i64::from_ne_bytes(e[56..64].try_into().unwrap_or_default())),
            );
        }
        Ok(out)
    }

    pub fn release(self, t: &mut Tracee) -> Result<()> {
        t.call("munmap", libc::SYS_munmap, &[self.addr, self.len])
            .map(|_| ())
    }
}

/// Registers [`Tracee::run_code`] sets.
#[derive(Debug, Clone, Copy)]
pub enum Reg {
    Rbx,
    R12,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_carry_flags_in_the_nr_word() {
        let o = Op::syscall(libc::SYS_mmap, &[1, 2, 3, 4, 5, 6]).fd_in_arg4();
        let b = o.encode();
        assert_eq!(u64::from_ne_bytes(b[..8].try_into().unwrap()), 9 | FD_ARG4);
        assert_eq!(u64::from_ne_bytes(b[48..56].try_into().unwrap()), 6);
        let c = Op::copy(10, 20, 30).encode();
        assert_eq!(u64::from_ne_bytes(c[..8].try_into().unwrap()), COPY);
        assert_eq!(u64::from_ne_bytes(c[24..32].try_into().unwrap()), 30);
    }

    #[test]
    fn the_stub_ends_in_a_trap() {
        assert_eq!(STUB[0], 0xfc); // cld
        assert_eq!(STUB[STUB.len() - 1], 0xcc); // int3
    }
}
