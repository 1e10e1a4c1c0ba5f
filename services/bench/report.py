"""A benchmark's results, for people (text) and for machines (JSON)."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from services.bench.runner import Result


def as_json(result: Result, floor: Result | None = None) -> dict[str, Any]:
    summary = result.summary
    figures: dict[str, Any] = {
        "system": result.system,
        "load": {**asdict(result.load), "count": result.load.count},
        "deployment": asdict(result.deployment) if result.deployment else None,
        "orders": summary.orders,
        "settled": summary.settled,
        "seconds": round(summary.seconds, 3),
        "orders_per_second": round(summary.throughput, 2),
        "latency_seconds": {key: _round(value) for key, value in asdict(summary.latency).items()},
        "outcomes": summary.outcomes,
        "timeouts": summary.timeouts,
        "duplicate_outcomes": summary.duplicates,
        "rate_first_window": _round(summary.first_window_rate),
        "rate_last_window": _round(summary.last_window_rate),
        "window_rates": [_round(value) for value in summary.window_rates],
        "window": summary.window,
        "cpu_seconds": {name: round(seconds, 2) for name, seconds in result.cpu_seconds.items()},
        "cpu_share": _shares(result),
        "per_order": {
            "publishes": _round(result.per_order(result.counts.published)),
            "deliveries": _round(result.per_order(result.counts.delivered)),
            "store_operations": _round(result.per_order(result.counts.store_operations)),
            "cpu_ms": _round(1000 * sum(result.cpu_seconds.values()) / max(summary.orders, 1)),
        },
        "stock": asdict(result.stock) if result.stock else None,
    }
    if floor is not None:
        figures["floor"] = as_json(floor)
        figures["ratio_to_floor"] = (
            _round(summary.throughput / floor.summary.throughput) if floor.summary.throughput else None
        )
    return figures


def as_text(result: Result, floor: Result | None = None) -> str:
    summary, latency = result.summary, result.summary.latency
    lines = [f"{result.system}: {result.load.describe()}"]
    if result.deployment:
        lines.append(f"  deployment   {result.deployment.describe()}")
    lines += [
        f"  settled      {summary.settled} of {summary.orders} in {summary.seconds:.1f} s: "
        f"{summary.throughput:.1f} orders/s",
        f"  latency      p50 {_ms(latency.p50)}  p95 {_ms(latency.p95)}  p99 {_ms(latency.p99)}  "
        f"max {_ms(latency.max)}  (publish to terminal event)",
        "  outcomes     " + ", ".join(f"{name} {count}" for name, count in summary.outcomes.items()),
        f"  timeouts     {summary.timeouts}; terminal events seen twice: {summary.duplicates}",
    ]
    if summary.first_window_rate and summary.last_window_rate:
        lines.append(
            f"  cost flat?   first {summary.window} settled at {summary.first_window_rate:.1f}/s, "
            f"last {summary.window} at {summary.last_window_rate:.1f}/s "
            f"({summary.last_window_rate / summary.first_window_rate - 1:+.0%}); each {summary.window} "
            "in turn: " + ", ".join(f"{value:.0f}" for value in summary.window_rates)
        )
    per_order = as_json(result)["per_order"]
    lines.append(
        f"  per order    {_num(per_order['publishes'])} publishes, "
        f"{_num(per_order['deliveries'])} deliveries, "
        f"{_num(per_order['store_operations'])} store operations, {_num(per_order['cpu_ms'])} ms of CPU"
    )
    shares = _shares(result)
    lines.append(
        "  cpu          "
        + ", ".join(
            f"{name} {seconds:.1f} s ({shares[name]:.0%})" for name, seconds in result.cpu_seconds.items()
        )
    )
    if result.stock:
        stock = result.stock
        lines.append(
            f"  stock        {'conserved' if stock.conserved else 'NOT CONSERVED'}, "
            f"{'OVERSOLD' if stock.oversold else 'never oversold'}, "
            f"{stock.reserved_left} units left reserved, "
            f"sold {'matches' if stock.sold_matches_confirmed else 'DOES NOT MATCH'} the confirmed orders"
        )
    if floor is not None:
        lines += ["", as_text(floor)]
        if floor.summary.throughput:
            lines.append(
                f"\norderflow / floor: {summary.throughput / floor.summary.throughput:.0%} "
                "of the floor's throughput"
            )
    return "\n".join(lines)


def _shares(result: Result) -> dict[str, float]:
    """Each process group's CPU as a share of one core over the run (1.0 is a whole core)."""
    seconds = result.summary.seconds or 1.0
    return {name: round(used / seconds, 3) for name, used in result.cpu_seconds.items()}


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 4)


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.0f} ms"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
