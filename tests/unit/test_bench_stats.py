"""The benchmark's figures: percentiles, rates, outcomes, computed from what was observed."""

from __future__ import annotations

import math

import pytest

from services.bench.stats import Observed, latency, percentile, rate, summarize, window_rates


def test_percentiles_interpolate_between_ranks() -> None:
    values = [float(n) for n in range(1, 101)]  # 1..100
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.99) == pytest.approx(99.01)
    assert percentile(values, 1.0) == 100.0
    assert percentile([3.0], 0.99) == 3.0
    assert math.isnan(percentile([], 0.5))


def test_latency_of_unsorted_values() -> None:
    figures = latency([0.3, 0.1, 0.2, 1.0])
    assert (figures.p50, figures.max, figures.mean) == (pytest.approx(0.25), 1.0, pytest.approx(0.4))


def test_a_rate_counts_the_gaps_between_events() -> None:
    assert rate([10.0, 11.0, 12.0]) == 1.0
    assert rate([1.0]) is None
    assert rate([2.0, 2.0]) is None


def test_window_rates_need_two_whole_windows() -> None:
    times = [n * 0.01 for n in range(100)] + [1 + n * 0.02 for n in range(100)]
    assert window_rates(times, 100) == [pytest.approx(100.0), pytest.approx(50.0)]
    assert window_rates(times, 101) == []


def test_the_last_window_ends_with_the_last_event() -> None:
    times = [n * 0.1 for n in range(25)] + [2.5 + n for n in range(3)]
    rates = window_rates(times, 10)
    assert rates[:2] == [pytest.approx(10.0), pytest.approx(10.0)]
    assert rates[-1] == pytest.approx(9 / (times[-1] - times[-10])), "the last 10, overlapping the second"
    assert len(rates) == 3


def test_a_summary_counts_outcomes_timeouts_and_unsettled_orders() -> None:
    observed = [
        Observed("a", 0.0, 1.0, "confirmed"),
        Observed("b", 0.0, 2.0, "cancelled", "payment_declined"),
        Observed("c", 1.0, 4.0, "cancelled", "timeout"),
        Observed("d", 1.0),
    ]
    summary = summarize(observed, duplicates=2, window=2)
    assert (summary.orders, summary.settled, summary.timeouts, summary.duplicates) == (4, 3, 1, 2)
    assert summary.outcomes == {
        "cancelled/payment_declined": 1,
        "cancelled/timeout": 1,
        "confirmed": 1,
        "unsettled": 1,
    }
    assert summary.seconds == 4.0 and summary.throughput == 0.75
    assert summary.latency.max == 3.0 and summary.latency.p50 == 2.0
    assert (summary.first_window_rate, summary.last_window_rate) == (None, None), "3 settled: no 2 windows"


def test_a_summary_of_nothing_settled_is_not_a_division_by_zero() -> None:
    summary = summarize([Observed("a", 5.0)])
    assert (summary.settled, summary.throughput, summary.seconds) == (0, 0.0, 0.0)
    assert math.isnan(summary.latency.p99)
