#!/usr/bin/env python3
"""DeltaBox demo: a scripted agent fixes a bug in a real Python project inside a sandbox,
checkpointing before each attempt and rolling back the failures; then latencies of
checkpoint/rollback on a large tree versus a copytree baseline measured in the same run."""
import json, statistics, subprocess, sys, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "deltabox"


def db(*args, check=True):
    p = subprocess.run([BIN, "--json", *args], capture_output=True, text=True)
    if check and p.returncode != 0 and not (args[0] == "exec" and p.stdout.startswith("{")):
        sys.exit(f"deltabox {' '.join(args)} failed: {p.stderr.strip()}")
    return json.loads(p.stdout) if p.stdout.strip() else {}


def sh(sb, cmd):
    return db("exec", sb, "--", cmd)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


PROJECT = r'''
mkdir -p /work/proj/calc /work/proj/tests && cd /work/proj
cat > calc/__init__.py <<'PY'
def mean(xs):
    """Arithmetic mean of a non-empty list."""
    return sum(xs) / (len(xs) - 1)   # BUG: off by one

def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
PY
cat > tests/test_calc.py <<'PY'
import unittest
from calc import mean, median

class T(unittest.TestCase):
    def test_mean(self):
        self.assertEqual(mean([1, 2, 3, 4]), 2.5)
    def test_mean_single(self):
        self.assertEqual(mean([7]), 7)
    def test_median(self):
        self.assertEqual(median([3, 1, 2]), 2)
PY
touch tests/__init__.py && git init -q && git add -A && git -c user.email=a@b -c user.name=agent commit -qm init && echo ready
'''

ATTEMPTS = [
    ("guess: divide by len+1", "sed -i 's|(len(xs) - 1)|(len(xs) + 1)|' calc/__init__.py"),
    ("agent goes rogue: rm -rf the project", "rm -rf /work/proj/*"),
    ("fix: divide by len", "sed -i 's|(len(xs) - 1)   # BUG: off by one|len(xs)|' calc/__init__.py"),
]


def main():
    print("== DeltaBox demo: checkpoint / rollback of a sandbox's files and shell ==\n")
    for c in db("doctor"):
        if c["name"] in ("overlayfs", "reflink", "criu", "ptrace"):
            print(f"  doctor: {c['name']:<10} {c['status']:<8} {c['detail']}")
    t = time.perf_counter()
    sb = db("create")["id"]
    print(f"\ncreated sandbox {sb} in {(time.perf_counter() - t) * 1000:.1f} ms (base: host root, read-only)")
    assert "ready" in sh(sb, PROJECT)["stdout"]
    r = sh(sb, "cd /work/proj && python3 -m unittest 2>&1 | grep -E '^(Ran|OK|FAILED)' | tr '\\n' ' '")
    print(f"tests before any fix: {r['stdout'].strip()}")
    sh(sb, "cd /work/proj && export AGENT_NOTES='tests fail in mean()'")
    base = db("checkpoint", sb, "--label", "bug")
    print(f"checkpoint {base['id']} 'bug': {base['ms']:.2f} ms\n")
    fixed = None
    for name, cmd in ATTEMPTS:
        sh(sb, f"cd /work/proj && {cmd}; cd /; export AGENT_NOTES='tried: {name}'")
        r = sh(sb, "cd /work/proj && python3 -m unittest 2>&1 | grep -E '^(Ran|OK|FAILED)' | tr '\\n' ' '")
        out = r["stdout"].strip() or "?"
        if out.endswith("OK") and not out.startswith("Ran 0 "):
            fixed = db("checkpoint", sb, "--label", "fixed")
            print(f"  attempt '{name}': tests {out} -> checkpoint {fixed['id']} ({fixed['ms']:.2f} ms)")
            break
        rb = db("restore", sb, base["id"])
        shell = sh(sb, "echo \"$PWD, notes: $AGENT_NOTES\"")["stdout"].strip()
        left = sh(sb, "cd /work/proj && git diff --quiet && echo clean || echo dirty")["stdout"].strip()
        print(f"  attempt '{name}': tests {out} -> rollback in {rb['ms']:.2f} ms (work tree after: {left}; shell back in {shell})")
    if fixed:
        patch = db("diff", base["id"], fixed["id"], "--patch")["patch"]
        print("\nthe winning patch (deltabox diff --patch):\n" + "\n".join("    " + l for l in patch.splitlines()))
    print("\ncheckpoint tree:")
    print(subprocess.run([BIN, "tree", sb], capture_output=True, text=True).stdout)

    print("== latency on a large tree: DeltaBox vs copytree, same sandbox, same run ==")
    r = sh(sb, "mkdir -p /work/big && cp -a /usr/lib/python3* /usr/share/perl* /work/big/ 2>/dev/null; "
               "find /work/big -type f | wc -l; du -sm /work/big | cut -f1")
    files, mb = r["stdout"].split()
    print(f"tree: {files} files, {mb} MB (copied into the sandbox's writable layer)")
    db("checkpoint", sb)
    ck, rb, cp = [], [], []
    n = 30
    for i in range(n):
        sh(sb, f"echo 'edit {i}' >> /work/proj/calc/__init__.py")
        c = db("checkpoint", sb)
        ck.append(c["ms"])
        sh(sb, "echo scratch > /work/proj/scratch")
        rb.append(db("restore", sb, c["id"])["ms"])
        if i < 5:
            t = sh(sb, "s=$(date +%s%N); cp -a /work/big /tmp/snap && e=$(date +%s%N); rm -rf /tmp/snap; echo $(( (e-s)/1000 ))")
            cp.append(int(t["stdout"].strip()) / 1000)
    print(f"{'operation':<34}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}   n")
    for name, xs in [("DeltaBox checkpoint (blocking)", ck), ("DeltaBox rollback", rb), ("copytree snapshot (cp -a)", cp)]:
        print(f"{name:<34}{pct(xs,50):>9.2f}{pct(xs,90):>9.2f}{pct(xs,99):>9.2f}   {len(xs)}")
    print(f"\ncheckpoint is {statistics.median(cp) / statistics.median(ck):.0f}x faster than copying the tree.")
    print("Rollback restores the shell too (cwd, variables). Fork is issue 4; `deltabox bench` has the full figures.")
    db("rm", sb)


if __name__ == "__main__":
    main()
