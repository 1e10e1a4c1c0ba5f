"""`orderflow bench`, run small: its report has the promised shape and every order settles.

Only the shape is checked here; the figures themselves are measured by `make bench`.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.system import ORDERFLOW


def test_a_small_benchmark_settles_every_order_and_reports_its_figures() -> None:
    done = subprocess.run(
        [
            ORDERFLOW,
            "bench",
            "--orders",
            "50",
            "--lines",
            "2",
            "--skus",
            "5",
            "--threads",
            "2",
            "--floor",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(done.stdout)
    assert (figures["orders"], figures["settled"], figures["timeouts"]) == (50, 50, 0)
    assert figures["outcomes"] == {"confirmed": 50}
    assert figures["orders_per_second"] > 0
    assert set(figures["latency_seconds"]) == {"p50", "p95", "p99", "max", "mean"}
    assert 0 < figures["latency_seconds"]["p50"] <= figures["latency_seconds"]["p99"]
    assert set(figures["per_order"]) == {"publishes", "deliveries", "store_operations", "cpu_ms"}
    assert all(value is not None and value > 0 for value in figures["per_order"].values())
    pools = {"order", "inventory", "payment", "notification", "reporting"}
    assert pools | {"rabbitmq", "ferretdb", "benchmark"} == set(figures["cpu_seconds"])
    # 50 orders cost a quiet pool (notification, reporting) a few ms: a clock tick or none.
    assert all(figures["cpu_seconds"][pool] >= 0 for pool in pools) and figures["cpu_seconds"]["order"] > 0
    assert figures["stock"] == {
        "conserved": True,
        "oversold": False,
        "reserved_left": 0,
        "sold_matches_confirmed": True,
    }
    floor = figures["floor"]
    assert (floor["settled"], floor["outcomes"]) == (50, {"confirmed": 50})
    # Counted from the broker's and the store's own counters, which any other client moves too.
    assert floor["per_order"]["publishes"] == pytest.approx(3, rel=0.05)
    assert floor["per_order"]["store_operations"] == pytest.approx(3, rel=0.05)
    assert figures["ratio_to_floor"] > 0
