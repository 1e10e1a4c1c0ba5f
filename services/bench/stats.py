"""The figures of a benchmark run, computed from what was observed: pure, unit-tested."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

TIMEOUT = "timeout"


@dataclass(frozen=True)
class Observed:
    """One order: when it was published, when its terminal event arrived (monotonic seconds)."""

    order_id: str
    published_at: float
    settled_at: float | None = None
    status: str | None = None
    reason: str | None = None

    @property
    def latency(self) -> float | None:
        return None if self.settled_at is None else self.settled_at - self.published_at


@dataclass(frozen=True)
class Latency:
    p50: float
    p95: float
    p99: float
    max: float
    mean: float


@dataclass(frozen=True)
class Summary:
    orders: int
    settled: int
    seconds: float  # from the first publish to the last terminal event
    throughput: float  # settled orders per second over `seconds`
    latency: Latency
    outcomes: dict[str, int]  # "confirmed", "cancelled/out_of_stock", ...
    timeouts: int
    duplicates: int  # terminal events that arrived more than once
    first_window_rate: float | None  # orders/s over the first `window` settlements
    last_window_rate: float | None  # and over the last ones
    window: int


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The value below which `fraction` of `ordered` (sorted, ascending) lies, interpolated."""
    if not ordered:
        return math.nan
    position = fraction * (len(ordered) - 1)
    below, above = math.floor(position), math.ceil(position)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def latency(values: Sequence[float]) -> Latency:
    ordered = sorted(values)
    if not ordered:
        return Latency(math.nan, math.nan, math.nan, math.nan, math.nan)
    return Latency(
        p50=percentile(ordered, 0.50),
        p95=percentile(ordered, 0.95),
        p99=percentile(ordered, 0.99),
        max=ordered[-1],
        mean=sum(ordered) / len(ordered),
    )


def rate(times: Sequence[float]) -> float | None:
    """Events per second over a run of event times (sorted): the gaps between them, counted."""
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


def window_rates(times: Sequence[float], window: int) -> tuple[float | None, float | None]:
    """The rate over the first `window` events and over the last `window` (sorted times); none
    unless there are two whole windows."""
    if len(times) < 2 * window:
        return None, None
    return rate(times[:window]), rate(times[-window:])


def outcome_of(observed: Observed) -> str:
    if observed.status is None:
        return "unsettled"
    return observed.status if not observed.reason else f"{observed.status}/{observed.reason}"


def summarize(observed: Sequence[Observed], duplicates: int = 0, window: int = 1000) -> Summary:
    settled = [order for order in observed if order.settled_at is not None]
    settle_times = sorted(order.settled_at for order in settled if order.settled_at is not None)
    started = min((order.published_at for order in observed), default=0.0)
    seconds = (settle_times[-1] - started) if settle_times else 0.0
    first, last = window_rates(settle_times, window)
    return Summary(
        orders=len(observed),
        settled=len(settled),
        seconds=seconds,
        throughput=len(settled) / seconds if seconds > 0 else 0.0,
        latency=latency([order.latency for order in settled if order.latency is not None]),
        outcomes=dict(sorted(Counter(outcome_of(order) for order in observed).items())),
        timeouts=sum(1 for order in settled if order.reason == TIMEOUT),
        duplicates=duplicates,
        first_window_rate=first,
        last_window_rate=last,
        window=window,
    )
