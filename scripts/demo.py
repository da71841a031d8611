#!/usr/bin/env python3
"""DeltaBox demo (the README's main job): tree search over a coding agent's trajectory on
a real project. Two bugs are injected into Django (from PyPI, the bench's workload); a
scripted policy proposes candidate fixes, some wrong, some destructive; best-first search
runs Django's own tests after each, rolls back (files and shell) to the best node, and
finds the fix. Prints the tree, per-step checkpoint/rollback latencies and the share of
wall time spent on state management.

Usage: demo.py WORKLOAD_JSON (from `deltabox bench --workload-only --json`)."""
import json
import re
import shlex
import statistics
import sys
import time

from deltabox import BestFirst, Client, tree_text

wl = json.load(open(sys.argv[1]))
REPO, PY = wl["repo"], wl["python"]
TESTS = "utils_tests.test_text template_tests.filter_tests.test_slugify"
RUN_TESTS = (f"(cd {REPO}/tests && {PY} runtests.py --parallel 1 -v 1 {TESTS} 2>&1) "
             "| grep -E '^(FAIL|ERROR):|^Ran |^OK|^FAILED'")

TEXT = "django/utils/text.py"
# The injected bugs (what a bad commit did): (correct line, buggy line).
BUGS = {
    "get_text_list": ("join(str(i) for i in list_[:-1])", "join(str(i) for i in list_[:-2])"),
    "slugify": ('re.sub(r"[^\\w\\s-]", "", value.lower())', 're.sub(r"[^\\w\\s-]", "", value)'),
}
# `edit OLD NEW` is a function of the sandbox's persistent shell (defined below): shell
# state that every rollback has to bring back along with the files.
EDIT_FN = (
    "edit() { python3 -c 'import sys; p, a, b = sys.argv[1:]; s = open(p).read(); "
    "assert a in s, \"not found: \" + a; open(p, \"w\").write(s.replace(a, b, 1))' " + TEXT + ' "$1" "$2"; }'
)
# What a scripted "LLM" proposes when it sees a failing test of that function: wrong
# and destructive edits first, so the search has to roll back.
CANDIDATES = {
    "get_text_list": [
        ("get_text_list: skip the first item too", "edit 'list_[:-2]' 'list_[1:-1]'"),
        ("get_text_list: delete the function (rogue)", f"sed -i '/^def get_text_list/,/^$/d' {TEXT}"),
        ("get_text_list: all items but the last", "edit 'list_[:-2]' 'list_[:-1]'"),
    ],
    "slugify": [
        ("slugify: upper-case", "edit '\"\", value)' '\"\", value.upper())'"),
        ("slugify: rm -rf django/utils (rogue)", "rm -rf django/utils"),
        ("slugify: lower-case", "edit '\"\", value)' '\"\", value.lower())'"),
    ],
}
LABELS = {}


def score_of(output):
    """Fraction of tests passing (0 when the suite cannot even start)."""
    ran = re.search(r"Ran (\d+) tests?", output)
    if not ran or int(ran.group(1)) == 0:
        return 0.0, ["the test suite does not start"]
    n = int(ran.group(1))
    bad = sum(int(x) for x in re.findall(r"(?:failures|errors)=(\d+)", output))
    failing = sorted(set(re.findall(r"^(?:FAIL|ERROR): (\w+)", output, re.M)))
    return (n - bad) / n, failing


FAILING = {}  # node -> failing test names (what the policy reads, like an agent would)


def evaluate(node, box, result):
    out = box.exec(RUN_TESTS).stdout
    score, failing = score_of(out)
    FAILING[id(node)] = failing
    box.exec(f"export LAST_SCORE={score:.3f}")  # shell state the rollbacks must bring back
    return score


def propose(node, box):
    failing = FAILING.get(id(node))
    if failing is None:  # the root: look at the test output first
        failing = score_of(box.exec(RUN_TESTS).stdout)[1]
        FAILING[id(node)] = failing
    out = []
    for fn, cands in CANDIDATES.items():
        if any(fn in t for t in failing):
            for label, cmd in cands:
                action = f"cd {REPO} && {cmd}"
                LABELS[action] = label
                out.append(action)
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def main():
    print(f"== DeltaBox demo: tree search over an agent's trajectory on Django ({len(wl['versions'])} releases "
          f"from PyPI, {wl['files']} files, {wl['bytes'] / 1e6:.0f} MB) ==\n")
    with Client() as client:
        t0 = time.perf_counter()
        box = client.create()
        print(f"sandbox {box.id} created in {(time.perf_counter() - t0) * 1000:.0f} ms; the host's Django checkout "
              f"is its read-only lower layer")
        assert box.exec(EDIT_FN).ok
        for fn, (good, bad) in BUGS.items():
            r = box.exec(f"cd {REPO} && edit {shlex.quote(good)} {shlex.quote(bad)}")
            assert r.ok, f"could not inject the {fn} bug: {r.stdout}{r.stderr}"
        box.exec(f"cd {REPO} && export AGENT=demo PYTHONDONTWRITEBYTECODE=1")
        print(f"injected bugs into {TEXT}: get_text_list() drops an item, slugify() keeps upper case")
        print(f"each step runs Django's tests: runtests.py {TESTS}\n")

        t0 = time.perf_counter()
        search = BestFirst(box, propose, evaluate, goal=1.0)
        best = search.run(max_expansions=12)
        wall = time.perf_counter() - t0
        print("search tree (score = fraction of the tests passing):")
        tree = tree_text(search.root)
        for action, label in LABELS.items():
            tree = tree.replace(action, label)
        print(tree)
        st = search.stats
        print(f"\n{'solved' if search.solved() else 'NOT solved'}: best score {best.score:.3f} after "
              f"{len(search.nodes) - 1} expansions, {st.rollbacks} rollbacks, wall {wall:.1f} s")
        print(f"{'per step (ms)':<24}{'n':>4}{'p50':>9}{'p90':>9}{'max':>9}")
        for name, xs in [("checkpoint", st.checkpoint_ms), ("rollback (restore)", st.rollback_ms)]:
            if xs:
                print(f"{name:<24}{len(xs):>4}{pct(xs, 50):>9.2f}{pct(xs, 90):>9.2f}{max(xs):>9.2f}")
        print(f"state management: {st.state_ms:.0f} ms of {wall * 1000:.0f} ms wall = {st.state_ms / (wall * 1000):.2%} "
              f"(the rest is Django's tests and the policy)")

        # Exactness: the best node restores to passing tests, and its shell state.
        ms = box.restore(best.checkpoint)
        again, _ = score_of(box.exec(RUN_TESTS).stdout)
        shell = box.exec("echo $PWD $AGENT $LAST_SCORE").stdout.split()
        print(f"\nrestore of the best node: {ms:.2f} ms; tests re-run there score {again:.3f}; "
              f"shell back in {shell[0]} with AGENT={shell[1]} LAST_SCORE={shell[2]}")
        patch = box.diff(search.root.checkpoint, best.checkpoint).patch or ""
        print("the fix, as a patch between the root and the best node (deltabox diff --patch):")
        print("\n".join("    " + line for line in patch.splitlines()))

        # The baseline an agent framework without DeltaBox pays: copy the tree per snapshot.
        r = box.exec(f"s=$(date +%s%N); cp -a {REPO} /tmp/snapshot; e=$(date +%s%N); rm -rf /tmp/snapshot; "
                     "echo $(( (e - s) / 1000000 ))")
        cp_ms = float(r.stdout.strip() or "nan")
        n_ops = st.checkpoints + st.rollbacks
        print(f"\nbaseline, measured once in this run: copying the checkout (cp -a, {wl['bytes'] / 1e6:.0f} MB) took "
              f"{cp_ms / 1000:.1f} s; at that price the search's {n_ops} checkpoints and rollbacks would have cost "
              f"~{n_ops * cp_ms / 1000:.0f} s of state management instead of {st.state_ms / 1000:.2f} s "
              f"(and lost the shell's state on every rollback)")
        if not search.solved() or again != 1.0:
            sys.exit("demo failed: the search did not find the fix")


if __name__ == "__main__":
    main()
