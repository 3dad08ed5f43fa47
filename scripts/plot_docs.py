"""Draws the pictures of docs/performance.md from docs/figures.json (the full run's figures):
docs/scale.png (the scale curve) and docs/comparison.png (delay and throughput beside the
baselines). Run by scripts/plot-docs.sh."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src, outdir = sys.argv[1], sys.argv[2]
f = json.load(open(src))

s = f["scale"]
n = [x["nodes"] for x in s]
fig, ax1 = plt.subplots(figsize=(7, 4))
ax1.plot(n, [x["p99_ms"] for x in s], "o-", color="tab:blue")
ax1.set_xlabel("nodes on one 2-core machine")
ax1.set_ylabel("p99 pub→deliver delay (ms)", color="tab:blue")
ax2 = ax1.twinx()
ax2.plot(n, [x["cpu_cores"] * 100 for x in s], "s--", color="tab:red")
ax2.set_ylabel("CPU per node (% of a core)", color="tab:red")
ax2.set_ylim(0, 5)
ax1.set_title("sensornet scale (full run, 20 readings/s)")
fig.tight_layout()
fig.savefig(f"{outdir}/scale.png", dpi=100)

d = f["delay_3_nodes_100_per_s_ms"]
t = f["durable_throughput_per_s"]
fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5))
names = [x["system"] for x in d]
xs = range(len(d))
w = 0.27
for i, (k, c) in enumerate([("p50", "tab:blue"), ("p99", "tab:orange"), ("max", "tab:gray")]):
    a.bar([x + (i - 1) * w for x in xs], [x[k] for x in d], w, label=k, color=c)
a.set_yscale("log")
a.set_xticks(list(xs), names, rotation=15)
a.set_ylabel("pub→deliver delay (ms, log)")
a.set_title("3 nodes, 100 readings/s")
a.legend()
colors = ["tab:green" if x["system"].startswith("sensornet") else "tab:purple" for x in t]
b.barh([x["system"] for x in t], [x["rate"] for x in t], color=colors)
b.set_xscale("log")
b.set_xlim(left=100)
b.set_xlabel("acknowledged readings/s through one node (log)")
b.set_title("durable throughput (sensornet: fsync'd, 3 replicas)")
fig.tight_layout()
fig.savefig(f"{outdir}/comparison.png", dpi=100)
print(f"wrote {outdir}/scale.png and {outdir}/comparison.png")
