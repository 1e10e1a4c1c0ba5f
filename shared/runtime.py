"""Running worker pools: processes, each with dramatiq worker threads and kombu consumer threads.

`serve` runs one worker process until SIGTERM or SIGINT, then drains: messages in hand finish
within DRAIN_SECONDS, prefetched ones go back to their queue unacked, and anything still in hand at
the deadline is left unacked as the process exits, for RabbitMQ to deliver again (handlers are
idempotent). `supervise` runs several such processes, restarts one that dies, stops them all on a
signal, and never outlives them: each is told to stop when its supervisor dies, even by SIGKILL.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import dramatiq.errors
from kombu.exceptions import OperationalError
from pymongo.errors import PyMongoError

from shared import health, logs, metrics
from shared.errors import CommandError, SettingError
from shared.messaging.exchanges import ConsumerThread, QueueConsumer
from shared.messaging.topology import TopologyConflict, TopologyMissing
from shared.messaging.transport import Transport
from shared.settings import Settings, load_settings

log = logging.getLogger(__name__)

# Container runtimes kill a process 10 s after SIGTERM. A worker process gives the messages in its
# hands DRAIN_SECONDS to finish, then exits whatever they do, and what it had not acked is delivered
# again; its supervisor kills what is left after EXIT_GRACE_SECONDS more.
DRAIN_SECONDS = 6.0
EXIT_GRACE_SECONDS = 2.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# A process of a pool consumes the partitions it prefers at once, and the others only after this:
# RabbitMQ makes the first consumer of a single-active-consumer queue its active one, so each
# partition gets an active consumer in its preferred process and standbys in the others.
STANDBY_DELAY_SECONDS = 3.0


@dataclass
class WorkerApp:
    """A wired worker: its transport, the saga queues its actors consume, its public-queue consumers."""

    name: str
    settings: Settings
    transport: Transport
    # Saga queues consumed by this worker's dramatiq actors (none for a worker without actors).
    saga_queues: list[str] = field(default_factory=list)
    # Partitioned saga queues are spread over a pool's processes (see STANDBY_DELAY_SECONDS).
    partitioned: bool = False
    consumers: list[Callable[[], QueueConsumer[Any]]] = field(default_factory=list)
    # Work before consuming that needs the broker or the store (indexes); retried with backoff
    # until they answer.
    on_start: list[Callable[[], Any]] = field(default_factory=list)
    # Work done periodically in a thread of its own: (name, seconds between runs, function).
    periodic: list[tuple[str, float, Callable[[], Any]]] = field(default_factory=list)
    closers: list[Callable[[], Any]] = field(default_factory=list)

    def preferred_queues(self, slot: int, slots: int) -> tuple[list[str], list[str]]:
        """The saga queues this process of a pool consumes at once, and those it stands by for."""
        if not self.partitioned or slots == 1:
            return list(self.saga_queues), []
        preferred = [queue for index, queue in enumerate(self.saga_queues) if index % slots == slot]
        return preferred, [queue for queue in self.saga_queues if queue not in preferred]


Bootstrap = Callable[[Settings], WorkerApp]


def consumers_per_queue(threads: int) -> int:
    """Consumers of each public queue. Each takes batches (all its queue holds, up to a batch), so a
    few keep up with any rate; more would split a backlog into smaller, costlier batches. The
    threads of the saga's actors are the other way around: an envelope that waits joins the next
    batch, so more threads make bigger batches under load."""
    return max(1, min(2, threads // 2))


def serve(
    app: WorkerApp,
    threads: int,
    stop: threading.Event,
    slot: int = 0,
    slots: int = 1,
    monitor: health.Monitor | None = None,
) -> bool:
    """Run `app` with `threads` threads per queue until `stop` is set, then drain and close; `monitor`,
    if given, hears which phase the process is in. False if some of its threads still held work
    DRAIN_SECONDS after `stop`: their messages are unacked, and the process should exit now (its
    connections close, and RabbitMQ delivers them again)."""
    if not _when_reachable(lambda: _start(app), stop, app.name):
        return True
    workers: list[dramatiq.Worker] = []

    def consume(queues: list[str]) -> None:
        if queues and not stop.is_set():
            worker = dramatiq.Worker(app.transport.bus.broker, queues=set(queues), worker_threads=threads)
            # One dramatiq message (up to a batch of saga messages) in hand per thread: more would
            # sit in this process unacked while another could take it, and hide a backlog.
            worker.queue_prefetch = threads
            # dramatiq's own delay queues (`<queue>.DQ`) stay empty: Orderflow delays through its
            # delay exchanges. dramatiq would hold up to 1000 per thread from them.
            worker.delay_prefetch = threads
            worker.start()
            workers.append(worker)

    preferred, standby = app.preferred_queues(slot, slots)
    consume(preferred)
    consumer_threads = [
        ConsumerThread(make_consumer(), name=f"{app.name}-consumer-{i}")
        for make_consumer in app.consumers
        for i in range(consumers_per_queue(threads))
    ]
    for thread in consumer_threads:
        thread.start()
    periodic_threads = [
        threading.Thread(
            target=_every, args=(name, seconds, task, stop), name=f"{app.name}-{name}", daemon=True
        )
        for name, seconds, task in app.periodic
    ]
    for periodic in periodic_threads:
        periodic.start()
    log.info(
        "%s worker ready: %d threads on %s",
        app.name,
        threads,
        ", ".join([*preferred, *(thread.consumer.queue.name for thread in consumer_threads[:1])])
        or "nothing",
    )
    if monitor is not None:
        monitor.set_phase(health.Phase.CONSUMING)
    if standby and not stop.wait(STANDBY_DELAY_SECONDS):
        consume(standby)
        log.info("%s worker standing by for %s", app.name, ", ".join(standby))
    stop.wait()
    if monitor is not None:
        monitor.set_phase(health.Phase.STOPPING)
    log.info("%s worker stopping: draining in-flight messages (up to %.0f s)", app.name, DRAIN_SECONDS)
    deadline = time.monotonic() + DRAIN_SECONDS
    # Every consumer stops taking messages at once; then each finishes what it holds, all of them
    # against one deadline. dramatiq's stop requeues what its consumers prefetched and, at the
    # deadline, closes its consumers with any message still in hand unacked.
    for thread in consumer_threads:
        thread.stop()
    for worker in workers:
        worker.stop(timeout=round(_left(deadline) * 1000))
    threads_left: list[threading.Thread] = [*consumer_threads, *periodic_threads]
    for running in threads_left:
        running.join(_left(deadline))
    busy = [t.name for t in [*threads_left, *(t for w in workers for t in w.workers)] if t.is_alive()]
    if busy:
        log.warning(
            "%s worker: %d thread(s) still busy after %.0f s (%s); stopping without them: RabbitMQ "
            "delivers the messages they hold again",
            app.name,
            len(busy),
            DRAIN_SECONDS,
            ", ".join(busy[:5]),
        )
        return False
    for close in app.closers:
        close()
    app.transport.close()
    log.info("%s worker stopped", app.name)
    return True


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _every(name: str, seconds: float, task: Callable[[], Any], stop: threading.Event) -> None:
    """Run `task` now and then every `seconds` until `stop`; a failure is logged and retried next time."""
    while not stop.is_set():
        try:
            task()
        except Exception:
            log.exception("%s failed; trying again in %.1f s", name, seconds)
        stop.wait(seconds)


def run_process(
    service: str,
    threads: int,
    metrics_port: int | None,
    slot: int = 0,
    slots: int = 1,
    health_dir: str | None = None,
) -> None:
    """One worker process (`slot` of a pool of `slots`): read settings, bootstrap, serve until
    signalled, and be gone within DRAIN_SECONDS (and a second) of the signal whatever its threads
    are doing. It serves its own /metrics, /healthz and /readyz on `metrics_port`, unless it is one
    of a pool's several processes (None: its supervisor serves them, and reads its health reports
    from `health_dir`)."""
    bootstrap: Bootstrap = importlib.import_module(f"services.{service}.bootstrap").bootstrap
    settings = load_settings()
    logs.configure(worker=service, level=settings.log_level)
    reports = None if health_dir is None else health.ReportDirectory(health_dir)
    monitor = health.monitor(settings, service, reports)
    monitor.start()
    if metrics_port is not None:
        serve_pool_metrics(settings, service, metrics_port, health.OwnProcess(monitor))
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        if not stop.is_set():
            stop.set()
            # Should the drain itself hang (a thread stuck in a call that ignores the deadline).
            watchdog = threading.Timer(DRAIN_SECONDS + 1.0, _exit_now, args=(service,))
            watchdog.daemon = True
            watchdog.start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    if not serve(bootstrap(settings), threads, stop, slot, slots, monitor):
        _exit_now(service)
    monitor.close()


def _exit_now(service: str) -> None:
    """Leave at once, as asked to stop: what this process has not acked, RabbitMQ delivers again."""
    log.warning("%s worker exiting with work in hand, for RabbitMQ to deliver again", service)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    os._exit(0)


DEPENDENCY_ERRORS = (OSError, PyMongoError, OperationalError, dramatiq.errors.BrokerConnectionError)


def _start(app: WorkerApp) -> None:
    app.transport.declare()
    for task in app.on_start:
        task()


def _when_reachable(start: Callable[[], None], stop: threading.Event, name: str) -> bool:
    """Run `start` once RabbitMQ and the store answer and the broker's queues match this release,
    retrying with backoff; False if stopped first."""
    delay = 1.0
    while not stop.is_set():
        try:
            start()
            return True
        except (*DEPENDENCY_ERRORS, TopologyMissing) as e:
            log.warning("%s cannot start yet (%s); retrying in %.0f s", name, e, delay)
        except TopologyConflict as e:
            log.error("%s cannot start: %s; retrying in %.0f s", name, e, delay)
        stop.wait(delay)
        delay = min(delay * 2, 30.0)
    return False


def serve_pool_metrics(
    settings: Settings, service: str, port: int, probe: health.Probe, multiprocess_dir: str | None = None
) -> None:
    try:
        port = metrics.serve(port, settings.metrics_address, probe, multiprocess_dir)
    except OSError as e:
        raise SettingError(
            f"{service}: cannot serve metrics on {settings.metrics_address}:{port} ({e.strerror}); "
            "run more processes of a pool with --processes, or give each pool its own "
            "ORDERFLOW_METRICS_PORT"
        ) from e
    # Tests and scripts read the port from this line (ORDERFLOW_METRICS_PORT=0: any free port).
    print(
        f"{service} metrics on http://{settings.metrics_address}:{port}/metrics"
        " (health on /healthz, readiness on /readyz)",
        flush=True,
    )


def run_pool(settings: Settings, service: str, processes: int, threads: int) -> int:
    """A pool of processes of one worker, with one endpoint (/metrics, /healthz, /readyz) for all of them."""
    port = settings.metrics_port_of(service)
    if processes == 1:
        run_process(service, threads, port)
        return 0
    with metrics.pool_directory() as directory:
        reports = health.ReportDirectory.create(os.path.join(directory, "health"))
        pool = health.PoolHealth(reports, processes)
        serve_pool_metrics(settings, service, port, pool, directory)
        return supervise(
            [
                PoolProcess(service, threads, None, slot, processes, str(reports.path))
                for slot in range(processes)
            ],
            pool,
        )


@dataclass(frozen=True)
class PoolProcess:
    """A process a supervisor runs: `slot` of a pool of `slots` processes of `service`."""

    service: str
    threads: int
    metrics_port: int | None  # where it serves its /metrics; None: its supervisor serves the pool's
    slot: int = 0
    slots: int = 1
    health_dir: str | None = None  # where it leaves its health reports for a supervisor that serves them


def _pool_process(spec: PoolProcess, supervisor: int) -> None:
    """The entry point of a supervised process."""
    _stop_with(supervisor)
    logs.configure(worker=spec.service)
    try:
        run_process(spec.service, spec.threads, spec.metrics_port, spec.slot, spec.slots, spec.health_dir)
    except CommandError as e:
        log.error("%s", e)
        sys.exit(e.exit_code)


def _stop_with(supervisor: int) -> None:
    """Be told to stop (SIGTERM: drain, then exit) when the supervisor dies, even by SIGKILL: Linux's
    parent-death signal, or elsewhere a thread that watches the parent's pid."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_watch_parent, args=(supervisor,), name="parent-watch", daemon=True).start()
    if os.getppid() != supervisor:  # it died before this process asked
        os.kill(os.getpid(), signal.SIGTERM)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def supervise(specs: list[PoolProcess], pool: health.PoolHealth | None = None) -> int:
    """Run one process per spec; restart any that dies; stop all on a signal, within
    DRAIN_SECONDS + EXIT_GRACE_SECONDS. `pool`, if given, hears of every start and exit."""
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())

    def start(slot: int) -> multiprocessing.process.BaseProcess:
        spec = specs[slot]
        process = context.Process(
            target=_pool_process, args=(spec, os.getpid()), name=f"orderflow-{spec.service}"
        )
        process.start()
        if pool is not None:
            pool.started(slot, process.pid)
        return process

    processes = [start(slot) for slot in range(len(specs))]
    started = [time.monotonic()] * len(specs)
    backoff = [1.0] * len(specs)
    while not stopping.wait(0.5):
        for slot, process in enumerate(processes):
            if process.is_alive():
                continue
            quick = time.monotonic() - started[slot] < health.STEADY_SECONDS
            backoff[slot] = min(backoff[slot] * 2, 30.0) if quick else 1.0
            if process.pid is not None:
                metrics.process_exited(process.pid)
            if pool is not None:
                pool.exited(slot, process.pid, quick)
            log.error(
                "%s (pid %s) exited with %s; restarting in %.0f s",
                process.name,
                process.pid,
                process.exitcode,
                backoff[slot],
            )
            if stopping.wait(backoff[slot]):
                break
            processes[slot], started[slot] = start(slot), time.monotonic()
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + DRAIN_SECONDS + EXIT_GRACE_SECONDS
    for process in processes:
        process.join(_left(deadline))
    for process in processes:
        if process.is_alive():
            log.warning("%s (pid %s) did not stop in time; killing it", process.name, process.pid)
            process.kill()
            process.join(1.0)
    return 0
