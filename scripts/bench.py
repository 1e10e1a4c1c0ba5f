"""`make bench`: the standard benchmark set, its figures as JSON and a plot of latency against load.

Runs `orderflow bench --json` once per scenario (each starts its own workers in a sandbox), writes
every result to docs/performance/results.json, plots the latency percentiles against the offered
rate to docs/performance/latency-vs-rate.png, and prints a Markdown summary.

    scripts/bench.py                 # the standard set (about 20 minutes on 2 cores)
    scripts/bench.py burst paced     # some of it: burst, paced, lines, scaling, sweep
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from shared import sandbox

OUT = Path(__file__).resolve().parents[1] / "docs" / "performance"

SCENARIOS: dict[str, list[tuple[str, list[str]]]] = {
    "burst": [("10,000 single-line orders at once, with the floor", ["--orders", "10000", "--floor"])],
    "paced": [("50 orders/s for 60 s", ["--rate", "50", "--duration", "60"])],
    "lines": [
        ("5,000 orders of 3 lines over 50 SKUs at once", ["--orders", "5000", "--lines", "3", "--skus", "50"])
    ],
    "scaling": [
        (f"3,000 at once, {label}", ["--orders", "3000", *args])
        for label, args in [
            ("1 thread", ["--threads", "1"]),
            ("2 threads", ["--threads", "2"]),
            ("4 threads", ["--threads", "4"]),
            ("8 threads", ["--threads", "8"]),
            ("2 order processes", ["--processes", "order=2"]),
            ("2 inventory processes, 2 partitions", ["--processes", "inventory=2", "--partitions", "2"]),
            ("2 partitions", ["--partitions", "2"]),
            ("4 partitions", ["--partitions", "4"]),
        ]
    ],
    "sweep": [
        (f"{rate} orders/s for 30 s", ["--rate", str(rate), "--duration", "30"])
        for rate in (10, 20, 30, 40, 50, 60, 80, 100)
    ],
}


COLUMNS = (
    "run",
    "orders/s",
    "p50 ms",
    "p99 ms",
    "timeouts",
    "publishes/order",
    "store ops/order",
    "CPU ms/order",
    "busiest",
    "vs floor",
)


def run(args: list[str]) -> dict[str, Any]:
    orderflow = str(Path(sys.executable).with_name("orderflow"))
    done = subprocess.run([orderflow, "bench", "--json", *args], capture_output=True, text=True, timeout=3600)
    if done.returncode not in (0, 1):
        raise SystemExit(f"orderflow bench {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout))


def plot(sweep: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [result["load"]["rate"] for result in sweep]
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for key, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
        axes.plot(rates, [1000 * result["latency_seconds"][key] for result in sweep], style, label=key)
    axes.axhline(500, color="grey", linestyle="--", linewidth=0.8, label="500 ms")
    axes.set_yscale("log")
    axes.set_xlabel("offered rate (orders/s, single-line orders, 30 s each)")
    axes.set_ylabel("publish to terminal event (ms)")
    axes.set_title("Orderflow latency against load, 2 cores, all services local")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)


def summary_row(name: str, result: dict[str, Any]) -> str:
    latency, per_order = result["latency_seconds"], result["per_order"]
    floor = (
        f"{result['ratio_to_floor']:.0%} ({result['floor']['orders_per_second']:.0f}/s)"
        if "floor" in result
        else ""
    )
    busiest = max(result["cpu_share"].items(), key=lambda item: item[1])
    return (
        f"| {name} | {result['orders_per_second']:.1f} "
        f"| {1000 * latency['p50']:.0f} | {1000 * latency['p99']:.0f} "
        f"| {result['timeouts']} | {per_order['publishes']:.2f} | {per_order['store_operations']:.2f} "
        f"| {per_order['cpu_ms']:.1f} | {busiest[0]} {busiest[1]:.0%} | {floor} |"
    )


def main(chosen: list[str]) -> int:
    # The pools run as in production, each as its own broker user (`make services` made them).
    for variable, url in sandbox.local_role_urls().items():
        os.environ.setdefault(variable, url)
    OUT.mkdir(parents=True, exist_ok=True)
    results_path = OUT / "results.json"
    results: dict[str, list[dict[str, Any]]] = (
        json.loads(results_path.read_text()) if results_path.exists() else {}
    )
    for scenario in chosen or list(SCENARIOS):
        results[scenario] = []
        for name, args in SCENARIOS[scenario]:
            started = time.monotonic()
            print(f"{scenario}: {name} ...", file=sys.stderr, flush=True)
            result = run(args)
            result["name"] = name
            results[scenario].append(result)
            print(f"  {summary_row(name, result)}  ({time.monotonic() - started:.0f} s)", file=sys.stderr)
            results_path.write_text(json.dumps(results, indent=1))
    if results.get("sweep"):
        plot(results["sweep"], OUT / "latency-vs-rate.png")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|---" * len(COLUMNS) + "|")
    for scenario in results.values():
        for result in scenario:
            print(summary_row(result["name"], result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
