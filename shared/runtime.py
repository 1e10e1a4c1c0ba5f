"""Running worker pools: processes, each with dramatiq worker threads and kombu consumer threads.

`serve` runs one worker process until SIGTERM or SIGINT, then drains: messages in hand finish,
prefetched ones go back to their queue unacked. `supervise` runs several such processes, restarts
one that dies, and stops them all on a signal.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import dramatiq.errors
from kombu.exceptions import OperationalError
from pymongo.errors import PyMongoError

from shared import logs, metrics
from shared.messaging.exchanges import ConsumerThread, QueueConsumer
from shared.messaging.topology import TopologyConflict
from shared.messaging.transport import Transport
from shared.settings import Settings

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_SECONDS = 30
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


def serve(app: WorkerApp, threads: int, stop: threading.Event, slot: int = 0, slots: int = 1) -> None:
    """Run `app` with `threads` threads per queue until `stop` is set, then drain and close."""
    if not _when_reachable(lambda: _start(app), stop, app.name):
        return
    workers: list[dramatiq.Worker] = []

    def consume(queues: list[str]) -> None:
        if queues and not stop.is_set():
            worker = dramatiq.Worker(app.transport.bus.broker, queues=set(queues), worker_threads=threads)
            # One dramatiq message (up to a batch of saga messages) in hand per thread: more would
            # sit in this process unacked while another could take it, and hide a backlog.
            worker.queue_prefetch = threads
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
    if standby and not stop.wait(STANDBY_DELAY_SECONDS):
        consume(standby)
        log.info("%s worker standing by for %s", app.name, ", ".join(standby))
    stop.wait()
    log.info("%s worker stopping: draining in-flight messages", app.name)
    # Every consumer stops taking messages at once; then each finishes what it holds.
    for thread in consumer_threads:
        thread.stop()
    for worker in workers:
        worker.stop(timeout=DRAIN_TIMEOUT_SECONDS * 1000)
    for thread in consumer_threads:
        thread.join(DRAIN_TIMEOUT_SECONDS)
    for periodic in periodic_threads:
        periodic.join(DRAIN_TIMEOUT_SECONDS)
    for close in app.closers:
        close()
    app.transport.close()
    log.info("%s worker stopped", app.name)


def _every(name: str, seconds: float, task: Callable[[], Any], stop: threading.Event) -> None:
    """Run `task` now and then every `seconds` until `stop`; a failure is logged and retried next time."""
    while not stop.is_set():
        try:
            task()
        except Exception:
            log.exception("%s failed; trying again in %.1f s", name, seconds)
        stop.wait(seconds)


def run_process(
    service: str, threads: int, serve_metrics: bool = True, slot: int = 0, slots: int = 1
) -> None:
    """One worker process (`slot` of a pool of `slots`): read settings, bootstrap, serve until
    signalled. It serves its own /metrics unless it is one of a pool's several processes (then its
    supervisor does)."""
    bootstrap: Bootstrap = importlib.import_module(f"services.{service}.bootstrap").bootstrap
    settings = Settings()
    logs.configure(worker=service, level=settings.log_level)
    if serve_metrics:
        serve_pool_metrics(settings, service)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serve(bootstrap(settings), threads, stop, slot, slots)


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
        except DEPENDENCY_ERRORS as e:
            log.warning("%s cannot start yet (%s); retrying in %.0f s", name, e, delay)
        except TopologyConflict as e:
            log.error("%s cannot start: %s; retrying in %.0f s", name, e, delay)
        stop.wait(delay)
        delay = min(delay * 2, 30.0)
    return False


def serve_pool_metrics(settings: Settings, service: str, multiprocess_dir: str | None = None) -> None:
    port = settings.metrics_port_of(service)
    try:
        metrics.serve(port, settings.metrics_address, multiprocess_dir)
    except OSError as e:
        raise SystemExit(
            f"{service}: cannot serve metrics on {settings.metrics_address}:{port} ({e.strerror}). "
            "Run more processes of a pool with --processes, or give each its own ORDERFLOW_METRICS_PORT."
        ) from e
    print(f"{service} metrics on http://{settings.metrics_address}:{port}/metrics", flush=True)


def run_pool(service: str, processes: int, threads: int) -> int:
    """A pool of processes of one worker, with one /metrics endpoint for all of them."""
    if processes == 1:
        run_process(service, threads)
        return 0
    with metrics.pool_directory() as directory:
        serve_pool_metrics(Settings(), service, directory)
        return supervise([(service, threads, False, slot, processes) for slot in range(processes)])


Spec = tuple[str, int, bool, int, int]  # service, threads, serves its metrics, slot, slots


def supervise(specs: list[Spec]) -> int:
    """Run one process per spec; restart any that dies; stop all on a signal."""
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())

    def start(spec: Spec) -> multiprocessing.process.BaseProcess:
        process = context.Process(target=run_process, args=spec, name=f"orderflow-{spec[0]}")
        process.start()
        return process

    processes = [start(spec) for spec in specs]
    started = [time.monotonic()] * len(specs)
    backoff = [1.0] * len(specs)
    while not stopping.wait(0.5):
        for slot, process in enumerate(processes):
            if process.is_alive():
                continue
            if time.monotonic() - started[slot] < 10:
                backoff[slot] = min(backoff[slot] * 2, 30.0)
            else:
                backoff[slot] = 1.0
            if process.pid is not None:
                metrics.process_exited(process.pid)
            log.error(
                "%s (pid %s) exited with %s; restarting in %.0f s",
                process.name,
                process.pid,
                process.exitcode,
                backoff[slot],
            )
            if stopping.wait(backoff[slot]):
                break
            processes[slot], started[slot] = start(specs[slot]), time.monotonic()
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS + 10
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
    return 0
