"""Latency CDFs of DeltaBox vs the baselines from a `deltabox bench` report.json."""
import json, os, sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

report = json.load(open(sys.argv[1]))
out = sys.argv[2]
d = report["deltabox"]


def cdf(ax, samples, label):
    xs = sorted(samples)
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    ax.step(xs, ys, where="post", label=f"{label} (n={len(xs)})")


for kind, ours in (("checkpoint", [("DeltaBox checkpoint", d["checkpoint"]),
                                   ("DeltaBox checkpoint, huge pages off", d["checkpoint_small_pages"])]),
                   ("restore", [("DeltaBox restore (random node)", d["restore"]),
                                (f"DeltaBox rollback ({d['think_ms']} ms think)", d["rollback"])])):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, s in ours:
        cdf(ax, s["samples"], label)
    for b in report["baselines"]:
        s = b.get(kind)
        if s:
            samples = s["samples"]
            if kind == "restore" and b["needs_replay"]:
                replay = d["replay"]["samples"]
                samples = [x + replay[i % len(replay)] for i, x in enumerate(samples)]
                cdf(ax, samples, b["name"] + " + replay")
            else:
                cdf(ax, samples, b["name"])
    ax.set_xscale("log")
    ax.set_xlabel(f"{kind} latency (ms, log scale)")
    ax.set_ylabel("fraction of operations")
    ax.set_title(f"{kind}: DeltaBox vs baselines, same workload, same run")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"{kind}_cdf.png"), dpi=110)
