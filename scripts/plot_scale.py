"""Draws the scale curve of a benchmark run: p99 delay and CPU per node against node count."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results, out = sys.argv[1], sys.argv[2]
r = json.load(open(results))
scale = r["scale"]
n = [s["nodes"] for s in scale]
p99 = [s["delay"].get("p99_ms", float("nan")) for s in scale]
cpu = [s["cpu_per_node_cores"] * 100 for s in scale]
fig, ax1 = plt.subplots(figsize=(7, 4))
ax1.plot(n, p99, "o-", color="tab:blue", label="p99 pub→deliver delay")
ax1.set_xlabel("nodes on one 2-core machine")
ax1.set_ylabel("p99 delay (ms)", color="tab:blue")
ax2 = ax1.twinx()
ax2.plot(n, cpu, "s--", color="tab:red", label="CPU per node")
ax2.set_ylabel("CPU per node (% of a core)", color="tab:red")
ax1.set_title(f"sensornet scale ({r['mode']} run, 20 readings/s)")
fig.tight_layout()
fig.savefig(out, dpi=110)
print(f"wrote {out}")
