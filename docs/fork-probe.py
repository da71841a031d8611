# Issue 4 (fork) feasibility probe, run as root: python3 docs/fork-probe.py [mask [covered]].
# Can a process with no capabilities (like a sandbox shell or a frozen template) create
# a user+pid+mount namespace, and can the child mount a fresh /proc there?
import ctypes, os, sys, struct
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID = 0x20000, 0x10000000, 0x20000000
MASK = len(sys.argv) > 1 and sys.argv[1] == "mask"

def drop_caps():
    # capset(v3, pid 0) with all sets empty: like the sandbox's shell, minus what it keeps.
    hdr = struct.pack("II", 0x20080522, 0)
    data = b"\0" * 24
    assert libc.syscall(126, hdr, data) == 0, ctypes.get_errno()

r, w = os.pipe(); r2, w2 = os.pipe()
t = os.fork()
if t == 0:
    # private mount ns for the experiment, with an optional masked /proc like the sandbox's
    assert libc.unshare(CLONE_NEWNS) == 0
    libc.mount(b"none", b"/", None, 0x4000 | 0x40000, None)  # MS_REC|MS_PRIVATE
    if MASK:
        assert libc.mount(b"/dev/null", b"/proc/keys", None, 0x1000, None) == 0  # MS_BIND
    if len(sys.argv) > 2 and sys.argv[2] == "covered":
        os.makedirs("/run/dbxhide/fullproc", exist_ok=True)
        assert libc.mount(b"proc", b"/run/dbxhide/fullproc", b"proc", 0, None) == 0
        assert libc.mount(b"tmpfs", b"/run/dbxhide", b"tmpfs", 1, None) == 0  # cover the parent dir
        print("unmasked proc at /run/dbxhide/fullproc, its parent dir covered by an empty tmpfs", flush=True)
    drop_caps()
    rc = libc.unshare(CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS)
    print("template-like process (no caps) unshare(USER|PID|NS):", rc, os.strerror(ctypes.get_errno()) if rc else "ok", flush=True)
    os.write(w, b"x"); os.read(r2, 1)  # parent writes the maps
    c = os.fork()
    if c == 0:
        st = open("/proc/self/status").read()
        print("child: pid in ns =", os.getpid(), "CapEff:", [l for l in st.splitlines() if l.startswith("CapEff")][0].split()[1], flush=True)
        print("child uid_map:", open("/proc/self/uid_map").read().split(), flush=True)
        rc = libc.mount(b"proc", b"/proc", b"proc", 0, None)
        print("child mounts a fresh proc:", rc, os.strerror(ctypes.get_errno()) if rc else "ok", flush=True)
        print("child sees /run/dbxhide:", os.listdir("/run/dbxhide"), "umount cover:", libc.umount2(b"/run/dbxhide", 0), flush=True)
        if rc == 0:
            print("child sees pids:", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), flush=True)
        rc = libc.mount(b"tmpfs", b"/mnt", b"tmpfs", 0, None)
        print("child mounts tmpfs:", rc, os.strerror(ctypes.get_errno()) if rc else "ok", flush=True)
        os._exit(0)
    os.waitpid(c, 0); os._exit(0)
os.read(r, 1)
for f, m in (("uid_map", "0 0 1"), ("gid_map", "0 0 1")):
    try:
        open(f"/proc/{t}/{f}", "w").write(m); print("privileged parent wrote", f, flush=True)
    except OSError as e:
        print("parent", f, e, flush=True)
os.write(w2, b"x"); os.waitpid(t, 0)
