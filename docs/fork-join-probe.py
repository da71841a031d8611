# Issue 4 (fork), the "join" design's riskiest steps, run as root: python3 docs/fork-join-probe.py
# A template-like process T (no capabilities, non-dumpable, in a mount namespace with a
# masked /proc like a sandbox's) makes user+pid+mount+net+uts+ipc namespaces; its child C
# is pid 1 there and forks S (the future shell). Then a host-root process I joins C's
# pid/net/uts/ipc namespaces (not its user namespace), forks I2 (the child sandbox's
# supervisor, inside the new pid namespace with host capabilities), which:
#   1. mounts a fresh proc of the new pid namespace while still in the host's mount
#      namespace (no "mount too revealing" check there), then joins C's mount namespace,
#   2. builds a new root there (tmpfs), moves the proc in, pivot_root()s (the old root
#      is locked: copied into a less privileged namespace) and detaches the old root,
#   3. ptrace-seizes S (non-dumpable, its mm owned by the initial user namespace) and
#      takes one of S's descriptors with pidfd_getfd.
import ctypes, os, signal, struct, sys, time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NS = {"user": 0x10000000, "pid": 0x20000000, "mnt": 0x20000, "net": 0x40000000, "uts": 0x04000000, "ipc": 0x08000000}
SYS_pivot_root, SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_move_mount, SYS_pidfd_getfd = 155, 430, 431, 432, 429, 438
PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_DETACH = 0x4206, 0x4207, 17


def err():
    return os.strerror(ctypes.get_errno())


def check(what, rc):
    print(f"  {what}: {'ok' if rc >= 0 else 'FAILED: ' + err()}", flush=True)
    if rc < 0:
        sys.exit(1)
    return rc


ready_r, ready_w = os.pipe()
maps_r, maps_w = os.pipe()
info_r, info_w = os.pipe()
t = os.fork()
if t == 0:
    # T: a sandbox-like mount namespace (masked /proc), no capabilities, non-dumpable.
    check("T: private mount ns", libc.unshare(NS["mnt"]))
    libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None)
    check("T: mask /proc/keys", libc.mount(b"/dev/null", b"/proc/keys", None, 0x1000, None))
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0
    hdr, data = struct.pack("II", 0x20080522, 0), b"\0" * 24
    check("T: drop every capability", libc.syscall(126, hdr, data))
    flags = NS["user"] | NS["pid"] | NS["mnt"] | NS["net"] | NS["uts"] | NS["ipc"]
    check("T: unshare(user|pid|mnt|net|uts|ipc) without capabilities", libc.unshare(flags))
    os.write(ready_w, b"x")
    os.read(maps_r, 1)
    c = os.fork()
    if c == 0:
        # C: pid 1 of the new pid namespace; S: the shell-to-be, blocked in read().
        r, w = os.pipe()
        s = os.fork()
        if s == 0:
            os.read(r, 1)
            os._exit(0)
        os.write(info_w, struct.pack("ii", s, r))
        os.read(r, 1)
        os._exit(0)
    os.waitpid(c, 0)
    os._exit(0)

os.read(ready_r, 1)
for f in ("uid_map", "gid_map"):
    open(f"/proc/{t}/{f}", "w").write("0 0 4294967295")
print("host: wrote uid_map/gid_map of T's user namespace (identity)", flush=True)
os.write(maps_w, b"x")
s_in_ns, s_fd = struct.unpack("ii", os.read(info_r, 8))
time.sleep(0.2)
c_host = int(open(f"/proc/{t}/task/{t}/children").read().split()[0])
print(f"host: C is host pid {c_host}; S is pid {s_in_ns} in the new pid namespace", flush=True)

i = os.fork()
if i == 0:
    # I: host root, joins everything but the user and mount namespaces, then forks I2.
    pidfd = os.pidfd_open(c_host)
    check("I: setns(pidfd of C, pid|net|uts|ipc)", libc.setns(pidfd, NS["pid"] | NS["net"] | NS["uts"] | NS["ipc"]))
    i2 = os.fork()
    if i2 == 0:
        print(f"I2: pid {os.getpid()} in the new pid namespace", flush=True)
        fs = check("I2: fsopen(proc) in the host mount ns", libc.syscall(SYS_fsopen, b"proc", 1))
        check("I2: fsconfig(create)", libc.syscall(SYS_fsconfig, fs, 6, None, None, 0))
        procfd = check("I2: fsmount(proc)", libc.syscall(SYS_fsmount, fs, 1, 0))
        check("I2: setns(pidfd of C, mnt)", libc.setns(pidfd, NS["mnt"]))
        os.makedirs("/tmp/dbx-join-root", exist_ok=True)
        check("I2: tmpfs new root", libc.mount(b"tmpfs", b"/tmp/dbx-join-root", b"tmpfs", 0, None))
        os.mkdir("/tmp/dbx-join-root/proc")
        check("I2: move the proc in (move_mount)", libc.syscall(SYS_move_mount, procfd, b"", -100, b"/tmp/dbx-join-root/proc", 4))
        os.chdir("/tmp/dbx-join-root")
        check("I2: pivot_root (old root locked)", libc.syscall(SYS_pivot_root, b".", b"."))
        check("I2: detach the old root", libc.umount2(b".", 2))
        os.chdir("/")
        print("I2: new root holds", sorted(os.listdir("/")), "; /proc pids:", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), flush=True)
        check(f"I2: PTRACE_SEIZE S (non-dumpable)", libc.ptrace(PTRACE_SEIZE, s_in_ns, None, None))
        check("I2: PTRACE_INTERRUPT S", libc.ptrace(PTRACE_INTERRUPT, s_in_ns, None, None))
        os.waitpid(s_in_ns, 0x40000000)  # __WALL
        pfd = os.pidfd_open(s_in_ns)
        got = check("I2: pidfd_getfd of S's pipe", libc.syscall(SYS_pidfd_getfd, pfd, s_fd, 0))
        print("I2: took", os.readlink(f"/proc/self/fd/{got}"), flush=True)
        libc.ptrace(PTRACE_DETACH, s_in_ns, None, None)
        print("ALL STEPS WORKED", flush=True)
        os._exit(0)
    _, st = os.waitpid(i2, 0)
    os._exit(os.waitstatus_to_exitcode(st))

_, st = os.waitpid(i, 0)
os.kill(c_host, signal.SIGKILL)
os.waitpid(t, 0)
sys.exit(os.waitstatus_to_exitcode(st))
