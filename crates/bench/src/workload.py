"""Builds the bench workload in DEST (idempotent; READY.json marks a finished build).

A real project, from registries this machine reaches: Django's source distributions from
PyPI committed one release after another into a git repository (history included, as in
a checkout), with a virtualenv whose `django` is that working tree (a .pth file) plus
Django's runtime dependencies, so `runtests.py` runs Django's own test suite.
"""
import json, os, shutil, subprocess, sys, tarfile

DEST = sys.argv[1]
VERSIONS = ["3.2.25", "4.0.10", "4.1.13", "4.2.15", "4.2.17", "5.0.8", "5.0.10", "5.1", "5.1.2", "5.1.4"]
DEPS = ["asgiref", "sqlparse"]
MIN_BYTES, MIN_FILES = 300 << 20, 6000


def run(*cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def size(path):
    files = total = 0
    for root, _, names in os.walk(path):
        for n in names:
            try:
                total += os.lstat(os.path.join(root, n)).st_size
                files += 1
            except OSError:
                pass
    return files, total


FORMAT = 2


def extras(info):
    """Format 2: a small wheel for the agent's `pip install` steps (installed offline
    inside the sandbox), and matplotlib in the venv for the report's plots."""
    wheels = os.path.join(DEST, "downloads", "wheels")
    os.makedirs(wheels, exist_ok=True)
    if not any(n.startswith("six-") for n in os.listdir(wheels)):
        run(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
            "six", "-d", wheels)
    py = info["python"]
    if subprocess.run([py, "-c", "import matplotlib"], capture_output=True).returncode != 0:
        print("workload: installing matplotlib (report plots)", file=sys.stderr, flush=True)
        run(py, "-m", "pip", "install", "-q", "--only-binary", ":all:", "matplotlib")
    info["wheels"] = wheels
    info["format"] = FORMAT
    return info


def main():
    ready = os.path.join(DEST, "READY.json")
    if os.path.exists(ready):
        info = json.load(open(ready))
        if info.get("format") != FORMAT:
            info = extras(info)
            with open(ready, "w") as f:
                json.dump(info, f)
        print(json.dumps(info))
        return
    dl = os.path.join(DEST, "downloads")
    repo = os.path.join(DEST, "django")
    os.makedirs(dl, exist_ok=True)
    shutil.rmtree(repo, ignore_errors=True)
    os.makedirs(repo)
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@deltabox",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@deltabox")
    run("git", "init", "-q", "-b", "main", repo)
    for v in VERSIONS:
        tgz = os.path.join(dl, f"Django-{v}.tar.gz")
        if not os.path.exists(tgz):
            print(f"workload: downloading Django {v} from PyPI", file=sys.stderr, flush=True)
            run(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                f"django=={v}", "-d", dl)
        for entry in os.listdir(repo):
            if entry != ".git":
                p = os.path.join(repo, entry)
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
        with tarfile.open(tgz) as t:
            for m in t.getmembers():
                parts = m.name.split("/", 1)
                if len(parts) < 2 or not parts[1]:
                    continue
                m.name = parts[1]
                t.extract(m, repo, filter="data")
        run("git", "-C", repo, "add", "-A")
        run("git", "-C", repo, "commit", "-q", "-m", f"Django {v}", env=env)
    with open(os.path.join(repo, ".gitignore"), "a") as f:
        f.write(".venv/\n")
    venv = os.path.join(repo, ".venv")
    run(sys.executable, "-m", "venv", venv)
    py = os.path.join(venv, "bin", "python")
    # Django's own test requirements, as a contributor installs them (binary wheels only:
    # the platform-specific C extensions that need building are left out).
    reqs = [l.strip() for f in ("tests/requirements/py3.txt", "docs/requirements.txt")
            for l in open(os.path.join(repo, f))
            if l.strip() and not l.startswith("#") and "sys_platform" not in l]
    print(f"workload: installing Django's test requirements from PyPI", file=sys.stderr, flush=True)
    run(py, "-m", "pip", "install", "-q", "--only-binary", ":all:", *DEPS, *reqs)
    site = subprocess.run([py, "-c", "import site; print(site.getsitepackages()[0])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "django-worktree.pth"), "w") as f:
        f.write(repo + "\n")
    files, total = size(repo)
    if total < MIN_BYTES or files < MIN_FILES:
        sys.exit(f"workload too small: {files} files, {total} bytes")
    info = extras({"repo": repo, "python": py, "site": site, "files": files, "bytes": total,
                   "versions": VERSIONS})
    with open(ready, "w") as f:
        json.dump(info, f)
    print(json.dumps(info))


main()
