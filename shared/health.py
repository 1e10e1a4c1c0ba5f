"""Liveness and readiness of a worker pool: `/healthz` and `/readyz`, served beside `/metrics`.

Every worker process checks RabbitMQ and the store every CHECK_INTERVAL_SECONDS, on one connection
to each that it keeps open, and keeps a report: its phase, the time of its latest report, when each
dependency last answered and why it did not. A process that serves its own endpoint reads its report
in memory; in a pool of several processes, each writes its report to a file, and the supervisor,
which serves the pool's endpoint, reads them beside what it knows of its processes (running,
exiting at start again and again). A probe connects to nothing: it reads, decides and answers.

Liveness is deliberately narrow: a broker or store outage never fails it (restarting a pool cannot
end an outage); only a process whose reports stopped (it is stuck) or a pool whose every process
keeps exiting at start does.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import pymongo
from kombu import Connection
from pymongo import MongoClient

from shared import store
from shared.messaging.nodes import connect_to_a_node
from shared.messaging.tls import AmqpTls
from shared.settings import Settings, masked

log = logging.getLogger(__name__)

BROKER = "broker"
STORE = "store"
DEPENDENCIES = (BROKER, STORE)

CHECK_INTERVAL_SECONDS = 2.0
# Each check gives up after this long: a probe must learn of an outage within seconds.
CHECK_TIMEOUT_SECONDS = 2.0
# A dependency last reached longer ago than this is missing, even if no check failed (one may hang).
REACHED_WITHIN_SECONDS = 15.0
# A running process with no report for this long is wedged: its checks run in a thread of their
# own and every one of them times out, so silence means the process itself is stuck.
WEDGED_AFTER_SECONDS = 60.0
# A process that exits sooner than this after it started failed to start; a supervisor restarts it
# with a growing backoff, and a pool whose every process did so CRASH_LOOP_EXITS times in a row is
# not alive, until one of them runs this long.
STEADY_SECONDS = 10.0
CRASH_LOOP_EXITS = 3
# The most of a failure's message a report keeps.
FAILURE_CHARS = 160


class Phase(StrEnum):
    """Where a worker process is in its life; only a consuming one is ready."""

    STARTING = "starting"  # waiting for the broker and the store, declaring queues and indexes
    CONSUMING = "consuming"
    STOPPING = "stopping"  # signalled: draining what it holds


@dataclass(frozen=True)
class Report:
    """What one worker process says of itself. Times are `time.monotonic()`, a clock the processes of
    one machine share (CLOCK_MONOTONIC on Linux), so a supervisor compares them with its own."""

    pid: int
    phase: Phase
    at: float
    reached: Mapping[str, float] = field(default_factory=dict)  # dependency -> last answered
    failures: Mapping[str, str] = field(default_factory=dict)  # dependency -> why its last check failed

    def to_json(self) -> str:
        return json.dumps(
            {
                "pid": self.pid,
                "phase": self.phase.value,
                "at": self.at,
                "reached": dict(self.reached),
                "failures": dict(self.failures),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Report:
        data = json.loads(text)
        return cls(
            int(data["pid"]),
            Phase(data["phase"]),
            float(data["at"]),
            {str(k): float(v) for k, v in data["reached"].items()},
            {str(k): str(v) for k, v in data["failures"].items()},
        )


@dataclass(frozen=True)
class Slot:
    """A supervisor's view of one place in a pool: the process that holds it, if one runs."""

    index: int
    pid: int | None = None
    running: bool = False
    since: float = 0.0  # when its process started or, if none runs, when the last one exited
    quick_exits: int = 0  # exits in a row, each sooner than STEADY_SECONDS after its start


@dataclass(frozen=True)
class Verdict:
    """A probe's answer: ok, or what is wrong, one line each."""

    ok: bool
    problems: tuple[str, ...] = ()

    def text(self) -> str:
        """The body of the answer: `ok`, or the problems, a line each."""
        return "ok\n" if self.ok else "".join(f"{problem}\n" for problem in self.problems)


def liveness(slots: Sequence[Slot], reports: Mapping[int, Report], now: float) -> Verdict:
    """Alive unless a running process sent no report for WEDGED_AFTER_SECONDS, or every slot's
    process keeps exiting at start. Dependencies play no part."""
    problems = [
        f"pid {slot.pid}: no report for {now - last:.0f} s: stuck"
        for slot in slots
        if slot.running
        and slot.pid is not None
        and now - (last := _last_report(slot, reports)) > WEDGED_AFTER_SECONDS
    ]
    looping = [slot for slot in slots if _crash_looping(slot, now)]
    if slots and len(looping) == len(slots):
        problems.extend(
            f"slot {slot.index}: exited {slot.quick_exits} times in a row within {STEADY_SECONDS:.0f} s "
            "of starting"
            for slot in looping
        )
    return Verdict(not problems, tuple(problems))


def readiness(slots: Sequence[Slot], reports: Mapping[int, Report], now: float) -> Verdict:
    """Ready when every slot's process consumes and reached the broker and the store at its last
    check, within REACHED_WITHIN_SECONDS."""
    problems: list[str] = []
    for slot in slots:
        if not slot.running or slot.pid is None:
            problems.append(f"slot {slot.index}: no process (restarting)")
        elif (report := reports.get(slot.pid)) is None:
            problems.append(f"pid {slot.pid}: starting (no report yet)")
        elif now - report.at > REACHED_WITHIN_SECONDS:
            problems.append(f"pid {slot.pid}: no report for {now - report.at:.0f} s")
        else:
            problems.extend(f"pid {slot.pid}: {problem}" for problem in _missing(report, now))
    return Verdict(not problems, tuple(problems))


def _missing(report: Report, now: float) -> Iterable[str]:
    if report.phase is not Phase.CONSUMING:
        yield str(report.phase)
    for dependency in DEPENDENCIES:
        reached = report.reached.get(dependency)
        if dependency in report.failures:
            yield f"{dependency} unreachable: {report.failures[dependency]}"
        elif reached is None:
            yield f"{dependency} not reached yet"
        elif now - reached > REACHED_WITHIN_SECONDS:
            yield f"{dependency} last reached {now - reached:.0f} s ago"


def _last_report(slot: Slot, reports: Mapping[int, Report]) -> float:
    report = reports.get(slot.pid) if slot.pid is not None else None
    return slot.since if report is None else max(report.at, slot.since)


def _crash_looping(slot: Slot, now: float) -> bool:
    steady = slot.running and now - slot.since >= STEADY_SECONDS
    return slot.quick_exits >= CRASH_LOOP_EXITS and not steady


class Probe(Protocol):
    """What a pool's endpoint asks, once per request."""

    def live(self) -> Verdict: ...

    def ready(self) -> Verdict: ...


def with_probes(probe: Probe, otherwise: WSGIApplication) -> WSGIApplication:
    """A WSGI application answering /healthz and /readyz from `probe` (200 or 503, and what is wrong
    as plain text), and any other path with `otherwise`."""

    def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        ask = {"/healthz": probe.live, "/readyz": probe.ready}.get(environ.get("PATH_INFO", ""))
        if ask is None:
            return otherwise(environ, start_response)
        verdict = ask()
        body = verdict.text().encode()
        start_response(
            "200 OK" if verdict.ok else "503 Service Unavailable",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]

    return application


class ReportDirectory:
    """Where the processes of a pool leave their reports, one file each, for their supervisor."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: str | Path) -> ReportDirectory:
        Path(path).mkdir(parents=True, exist_ok=True)
        return cls(path)

    def write(self, report: Report) -> None:
        # Written aside and renamed: a reader sees the previous report or this one, never half of one.
        partial = self.path / f".{report.pid}.partial"
        partial.write_text(report.to_json())
        os.replace(partial, self._file(report.pid))

    def read(self, pid: int) -> Report | None:
        try:
            return Report.from_json(self._file(pid).read_text())
        except (OSError, ValueError, KeyError):
            return None

    def remove(self, pid: int) -> None:
        self._file(pid).unlink(missing_ok=True)

    def _file(self, pid: int) -> Path:
        return self.path / f"{pid}.json"


class DependencyChecks:
    """Reaches RabbitMQ at `amqp_url` and the store through the client `connect_store` makes, each
    over a connection kept open from one check to the next (and opened again after a failure), each
    check bounded by `timeout` seconds."""

    def __init__(
        self,
        amqp_url: str,
        connect_store: Callable[[], MongoClient],
        timeout: float = CHECK_TIMEOUT_SECONDS,
        tls: AmqpTls | None = None,
    ) -> None:
        self._amqp_url = amqp_url
        self._tls = tls or AmqpTls()
        self._connect_store = connect_store
        self._timeout = timeout
        self._connection: Connection | None = None
        self._channel: Any = None
        self._client: MongoClient | None = None

    def broker(self) -> None:
        """A round trip to the broker on the worker's vhost: a passive declaration of `amq.direct`,
        which every vhost has."""
        try:
            if self._channel is None:
                self._connection = self._tls.connection(
                    self._amqp_url,
                    connect_timeout=self._timeout,
                    heartbeat=0,
                    transport_options={"read_timeout": self._timeout, "write_timeout": self._timeout},
                )
                self._channel = connect_to_a_node(self._connection).channel()
            self._channel.exchange_declare(exchange="amq.direct", type="direct", passive=True)
        except Exception:
            self._close_broker()
            raise

    def store(self) -> None:
        """A `ping` to the store, through a client that keeps its connection pool."""
        if self._client is None:
            self._client = self._connect_store()
        with pymongo.timeout(self._timeout):
            self._client.admin.command("ping")

    def close(self) -> None:
        self._close_broker()
        if self._client is not None:
            self._client.close()
            self._client = None

    def _close_broker(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            try:
                connection.release()
            except Exception:  # it is being dropped because it failed
                log.debug("closing the health check's broker connection", exc_info=True)


class Monitor:
    """This process's report, kept up to date by checks run every `interval` in a thread of its own;
    in memory, and in `directory` (if given) for the pool's supervisor."""

    def __init__(
        self,
        checks: Mapping[str, Callable[[], object]],
        directory: ReportDirectory | None = None,
        *,
        interval: float = CHECK_INTERVAL_SECONDS,
        closers: Sequence[Callable[[], object]] = (),
    ) -> None:
        self._checks = dict(checks)
        self._directory = directory
        self._interval = interval
        self._closers = list(closers)
        self._lock = threading.Lock()
        self._phase = Phase.STARTING
        self._reached: dict[str, float] = {}
        self._failures: dict[str, str] = {}
        self._report: Report | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-checks", daemon=True)
        self.started_at = time.monotonic()

    @property
    def report(self) -> Report | None:
        return self._report

    def start(self) -> None:
        self._publish()
        self._thread.start()

    def set_phase(self, phase: Phase) -> None:
        with self._lock:
            self._phase = phase
        self._publish()

    def check(self) -> Report:
        """Run every check once and publish the outcome."""
        for name, reach in self._checks.items():
            try:
                reach()
            except Exception as e:
                failure = _describe(e)
                with self._lock:
                    lost = name not in self._failures
                    self._failures[name] = failure
                if lost:
                    log.warning("health: %s unreachable (%s)", name, failure)
            else:
                with self._lock:
                    back = self._failures.pop(name, None) is not None
                    self._reached[name] = time.monotonic()
                if back:
                    log.info("health: %s reachable again", name)
        return self._publish()

    def close(self) -> None:
        """Stop checking, without waiting (a process that stops has seconds to do so): the thread
        closes its connections as it ends."""
        self._stop.set()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.check()
                except Exception:  # a bug here must not end the reports that keep the pool alive
                    log.exception("health checks failed")
                self._stop.wait(self._interval)
        finally:
            for close in self._closers:
                try:
                    close()
                except Exception:
                    log.debug("closing a health check", exc_info=True)

    def _publish(self) -> Report:
        with self._lock:
            report = Report(
                os.getpid(), self._phase, time.monotonic(), dict(self._reached), dict(self._failures)
            )
            self._report = report
            if self._directory is not None:
                try:
                    self._directory.write(report)
                except OSError as e:  # its supervisor is ending the pool and took the directory away
                    log.debug("cannot write the health report: %s", e)
        return report


def _describe(error: Exception) -> str:
    """One short line: the error's type and message, without pymongo's list of its timeouts."""
    text = str(error).split(" (configured timeouts")[0].replace("\n", " ")
    return masked(f"{type(error).__name__}: {text}")[:FAILURE_CHARS]


def monitor(settings: Settings, service: str, directory: ReportDirectory | None = None) -> Monitor:
    """A monitor of RabbitMQ and the store, reached as `service` reaches them (its own users, if it
    has them)."""
    checks = DependencyChecks(
        settings.amqp_url_of(service),
        lambda: store.connect(settings, service),
        tls=AmqpTls.of(settings),
    )
    return Monitor({BROKER: checks.broker, STORE: checks.store}, directory, closers=[checks.close])


class OwnProcess:
    """The probe of a process that serves its own endpoint: its monitor's report."""

    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    def live(self) -> Verdict:
        return liveness(*self._view())

    def ready(self) -> Verdict:
        return readiness(*self._view())

    def _view(self) -> tuple[list[Slot], dict[int, Report], float]:
        report = self._monitor.report
        pid = os.getpid()
        slot = Slot(0, pid, running=True, since=self._monitor.started_at)
        return [slot], {} if report is None else {pid: report}, time.monotonic()


class PoolHealth:
    """The probe of a pool of several processes, served by their supervisor: what the supervisor
    says of each slot, and the report each process left in `directory`."""

    def __init__(self, directory: ReportDirectory, slots: int) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._slots = [Slot(index, since=time.monotonic()) for index in range(slots)]

    def started(self, index: int, pid: int | None) -> None:
        """The supervisor started process `pid` in slot `index`."""
        with self._lock:
            self._slots[index] = replace(self._slots[index], pid=pid, running=True, since=time.monotonic())

    def exited(self, index: int, pid: int | None, quick: bool) -> None:
        """The process of slot `index` exited, `quick`ly after it started or not; its report goes."""
        with self._lock:
            slot = self._slots[index]
            self._slots[index] = replace(
                slot, running=False, since=time.monotonic(), quick_exits=slot.quick_exits + 1 if quick else 0
            )
        if pid is not None:
            self.directory.remove(pid)

    def live(self) -> Verdict:
        return liveness(*self._view())

    def ready(self) -> Verdict:
        return readiness(*self._view())

    def _view(self) -> tuple[list[Slot], dict[int, Report], float]:
        with self._lock:
            slots = list(self._slots)
        reports = {
            slot.pid: report
            for slot in slots
            if slot.running and slot.pid is not None and (report := self.directory.read(slot.pid))
        }
        return slots, reports, time.monotonic()
