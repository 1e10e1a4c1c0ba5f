"""What /healthz and /readyz decide from the reports of a pool's processes, and how they answer."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from shared.health import (
    CRASH_LOOP_EXITS,
    REACHED_WITHIN_SECONDS,
    STEADY_SECONDS,
    WEDGED_AFTER_SECONDS,
    Monitor,
    Phase,
    PoolHealth,
    Report,
    ReportDirectory,
    Slot,
    Verdict,
    liveness,
    readiness,
    with_probes,
)

NOW = 10_000.0


def consuming(pid: int, at: float = NOW, **failures: str) -> Report:
    """A process that reached both dependencies at `at` and whose checks now fail as given."""
    return Report(pid, Phase.CONSUMING, at, {"broker": at, "store": at}, failures)


def running(index: int, pid: int, since: float = NOW - 100, quick_exits: int = 0) -> Slot:
    return Slot(index, pid, running=True, since=since, quick_exits=quick_exits)


def test_a_pool_is_ready_when_every_process_consumes_and_reached_both_dependencies() -> None:
    slots = [running(0, 11), running(1, 12)]
    reports = {11: consuming(11, at=NOW - 1), 12: consuming(12, at=NOW - 2)}
    assert readiness(slots, reports, NOW) == Verdict(True)


def test_one_process_that_cannot_reach_the_store_makes_the_pool_unready_and_says_why() -> None:
    slots = [running(0, 11), running(1, 12)]
    reports = {11: consuming(11), 12: consuming(12, store="ServerSelectionTimeoutError: refused")}
    verdict = readiness(slots, reports, NOW)
    assert not verdict.ok
    assert verdict.problems == ("pid 12: store unreachable: ServerSelectionTimeoutError: refused",)
    assert verdict.text() == "pid 12: store unreachable: ServerSelectionTimeoutError: refused\n"


def test_a_dependency_not_reached_lately_is_missing_even_if_no_check_failed() -> None:
    stale = NOW - REACHED_WITHIN_SECONDS - 1
    report = Report(11, Phase.CONSUMING, NOW, {"broker": NOW, "store": stale})
    assert readiness([running(0, 11)], {11: report}, NOW).problems == (
        f"pid 11: store last reached {REACHED_WITHIN_SECONDS + 1:.0f} s ago",
    )
    never = Report(11, Phase.CONSUMING, NOW, {"store": NOW})
    assert readiness([running(0, 11)], {11: never}, NOW).problems == ("pid 11: broker not reached yet",)


@pytest.mark.parametrize("phase", [Phase.STARTING, Phase.STOPPING])
def test_a_process_starting_or_draining_is_not_ready(phase: Phase) -> None:
    report = Report(11, phase, NOW, {"broker": NOW, "store": NOW})
    assert readiness([running(0, 11)], {11: report}, NOW).problems == (f"pid 11: {phase}",)


def test_a_pool_with_a_process_missing_silent_or_not_reported_yet_is_not_ready() -> None:
    silent = consuming(12, at=NOW - REACHED_WITHIN_SECONDS - 5)
    slots = [Slot(0, 10, running=False, since=NOW - 1, quick_exits=1), running(1, 12), running(2, 13)]
    assert readiness(slots, {12: silent}, NOW).problems == (
        "slot 0: no process (restarting)",
        f"pid 12: no report for {REACHED_WITHIN_SECONDS + 5:.0f} s",
        "pid 13: starting (no report yet)",
    )


def test_an_outage_of_the_broker_and_the_store_does_not_touch_liveness() -> None:
    down = Report(11, Phase.STARTING, NOW, {}, {"broker": "refused", "store": "refused"})
    assert liveness([running(0, 11)], {11: down}, NOW) == Verdict(True)


def test_a_process_whose_reports_stopped_is_wedged() -> None:
    slots = [running(0, 11), running(1, 12)]
    reports = {11: consuming(11), 12: consuming(12, at=NOW - WEDGED_AFTER_SECONDS - 1)}
    assert liveness(slots, reports, NOW).problems == (
        f"pid 12: no report for {WEDGED_AFTER_SECONDS + 1:.0f} s: stuck",
    )


def test_a_process_gets_time_to_send_its_first_report() -> None:
    young = running(0, 11, since=NOW - WEDGED_AFTER_SECONDS + 5)
    assert liveness([young], {}, NOW).ok
    old = running(0, 11, since=NOW - WEDGED_AFTER_SECONDS - 5)
    assert not liveness([old], {}, NOW).ok


def test_a_pool_is_not_alive_once_every_process_keeps_exiting_at_start() -> None:
    looping = Slot(0, 11, running=False, since=NOW, quick_exits=CRASH_LOOP_EXITS)
    restarted = running(1, 12, since=NOW - 1, quick_exits=CRASH_LOOP_EXITS)
    verdict = liveness([looping, restarted], {}, NOW)
    assert verdict.problems == tuple(
        f"slot {i}: exited {CRASH_LOOP_EXITS} times in a row within {STEADY_SECONDS:.0f} s of starting"
        for i in (0, 1)
    )


def test_a_pool_stays_alive_while_one_process_runs_or_before_the_loop_is_clear() -> None:
    looping = Slot(0, 11, running=False, since=NOW, quick_exits=CRASH_LOOP_EXITS)
    assert liveness([looping, running(1, 12)], {12: consuming(12)}, NOW).ok, "one process still works"
    twice = Slot(0, 11, running=False, since=NOW, quick_exits=CRASH_LOOP_EXITS - 1)
    assert liveness([twice], {}, NOW).ok, "not yet a loop"
    steady = running(0, 13, since=NOW - STEADY_SECONDS, quick_exits=CRASH_LOOP_EXITS)
    assert liveness([steady], {13: consuming(13)}, NOW).ok, "running steadily again"


def test_a_supervisor_counts_quick_exits_in_a_row_and_forgets_a_dead_process_report(tmp_path: Path) -> None:
    directory = ReportDirectory.create(tmp_path / "health")
    pool = PoolHealth(directory, slots=1)
    assert pool.ready().problems == ("slot 0: no process (restarting)",)
    for pid in (21, 22, 23):
        pool.started(0, pid)
        directory.write(consuming(pid))
        pool.exited(0, pid, quick=True)
        assert not (directory.path / f"{pid}.json").exists()
    assert not pool.live().ok
    pool.started(0, 24)
    pool.exited(0, 24, quick=False)
    assert pool.live().ok, "an exit after running steadily ends the count"


def test_a_supervisor_reads_each_running_process_report(tmp_path: Path) -> None:
    directory = ReportDirectory.create(tmp_path / "health")
    pool = PoolHealth(directory, slots=2)
    pool.started(0, os.getpid())  # the monitor below reports as this process
    pool.started(1, 32)
    monitor = Monitor({"broker": lambda: None, "store": lambda: None}, directory)
    monitor.check()
    assert pool.ready().problems == (f"pid {os.getpid()}: starting", "pid 32: starting (no report yet)")
    monitor.set_phase(Phase.CONSUMING)
    assert pool.ready().problems == ("pid 32: starting (no report yet)",)


def test_a_monitor_records_failures_and_recoveries_and_its_phase(tmp_path: Path) -> None:
    store_up = False

    def store() -> None:
        if not store_up:
            raise ConnectionRefusedError(111, "Connection refused")

    directory = ReportDirectory.create(tmp_path)
    monitor = Monitor({"broker": lambda: None, "store": store}, directory)
    monitor.set_phase(Phase.CONSUMING)
    report = monitor.check()
    assert report.failures == {"store": "ConnectionRefusedError: [Errno 111] Connection refused"}
    assert set(report.reached) == {"broker"}
    store_up = True
    report = monitor.check()
    assert report.failures == {} and set(report.reached) == {"broker", "store"}
    assert directory.read(report.pid) == report == monitor.report
    monitor.set_phase(Phase.STOPPING)
    assert (reread := directory.read(report.pid)) is not None and reread.phase is Phase.STOPPING


def test_a_report_survives_its_file() -> None:
    report = Report(7, Phase.CONSUMING, 1.5, {"broker": 1.25}, {"store": "timed out"})
    assert Report.from_json(report.to_json()) == report


def test_an_unreadable_report_is_no_report(tmp_path: Path) -> None:
    directory = ReportDirectory.create(tmp_path)
    (tmp_path / "9.json").write_text('{"pid": 9')
    assert directory.read(9) is None
    assert directory.read(10) is None


class Fixed:
    def __init__(self, live: Verdict, ready: Verdict) -> None:
        self._live, self._ready = live, ready

    def live(self) -> Verdict:
        return self._live

    def ready(self) -> Verdict:
        return self._ready


def get(app: Any, path: str) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"PATH_INFO": path, "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    answered: list[Any] = []
    body: Iterable[bytes] = app(environ, lambda status, headers: answered.extend([status, dict(headers)]))
    return answered[0], answered[1], b"".join(body)


def test_the_endpoint_answers_probes_and_leaves_every_other_path_to_the_metrics() -> None:
    def metrics(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"orderflow_up 1\n"]

    app = with_probes(Fixed(Verdict(True), Verdict(False, ("pid 5: store unreachable: refused",))), metrics)
    assert get(app, "/healthz")[::2] == ("200 OK", b"ok\n")
    status, headers, body = get(app, "/readyz")
    assert (status, body) == ("503 Service Unavailable", b"pid 5: store unreachable: refused\n")
    assert headers["Content-Type"].startswith("text/plain") and headers["Cache-Control"] == "no-store"
    assert get(app, "/metrics")[2] == b"orderflow_up 1\n"
