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
    window_rates: list[float]  # orders/s over each `window` settlements in turn, the last ones last
    window: int

    @property
    def first_window_rate(self) -> float | None:
        return self.window_rates[0] if self.window_rates else None

    @property
    def last_window_rate(self) -> float | None:
        return self.window_rates[-1] if self.window_rates else None


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


def window_rates(times: Sequence[float], window: int) -> list[float]:
    """The rate over each run of `window` events in turn (sorted times), the last run ending with
    the last event; none unless there are two whole windows."""
    if window < 2 or len(times) < 2 * window:
        return []
    starts = list(range(0, len(times) - window + 1, window))
    if starts[-1] + window < len(times):
        starts.append(len(times) - window)
    return [rate(times[start : start + window]) or math.inf for start in starts]


def outcome_of(observed: Observed) -> str:
    if observed.status is None:
        return "unsettled"
    return observed.status if not observed.reason else f"{observed.status}/{observed.reason}"


def summarize(observed: Sequence[Observed], duplicates: int = 0, window: int = 1000) -> Summary:
    settled = [order for order in observed if order.settled_at is not None]
    settle_times = sorted(order.settled_at for order in settled if order.settled_at is not None)
    started = min((order.published_at for order in observed), default=0.0)
    seconds = (settle_times[-1] - started) if settle_times else 0.0
    return Summary(
        orders=len(observed),
        settled=len(settled),
        seconds=seconds,
        throughput=len(settled) / seconds if seconds > 0 else 0.0,
        latency=latency([order.latency for order in settled if order.latency is not None]),
        outcomes=dict(sorted(Counter(outcome_of(order) for order in observed).items())),
        timeouts=sum(1 for order in settled if order.reason == TIMEOUT),
        duplicates=duplicates,
        window_rates=window_rates(settle_times, window),
        window=window,
    )
