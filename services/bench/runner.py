"""Running a benchmark: Orderflow's five pools, or the floor, in a sandbox of their own, under a load."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from services.bench import floor, load, probes
from services.bench.load import Load, OutcomeWatcher, Progress
from services.bench.stats import Summary, summarize
from services.inventory.store import ProductRepository
from shared import sandbox, store
from shared.contracts import saga
from shared.messaging import topology
from shared.messaging.probe import RabbitQueueProbe
from shared.messaging.publisher import Outgoing, Publisher
from shared.messaging.tls import AmqpTls
from shared.messaging.topology import Topology
from shared.messaging.transport import Transport
from shared.settings import SERVICES, Settings

# A run gives up on orders that see no outcome after this long without any progress.
STALL_SECONDS = 60.0
UNIT_PRICE = 100  # minor units


@dataclass(frozen=True)
class Deployment:
    """How Orderflow runs during a benchmark."""

    threads: int = 8
    processes: dict[str, int] = field(default_factory=dict)  # service -> processes (default 1)
    partitions: int = 1
    batch_size: int | None = None
    log_level: str = "INFO"

    def processes_of(self, service: str) -> int:
        return self.processes.get(service, 1)

    def describe(self) -> str:
        pools = ", ".join(f"{service} {self.processes_of(service)}" for service in SERVICES)
        batch = f", batches of {self.batch_size}" if self.batch_size else ""
        partitions = f"{self.partitions} stock partition(s)"
        return f"{self.threads} threads per process; processes: {pools}; {partitions}{batch}"


@dataclass(frozen=True)
class StockCheck:
    conserved: bool  # available + reserved + sold == what was stocked, for every SKU
    oversold: bool  # a SKU sold more than it had, or went below zero
    reserved_left: int  # units still reserved once every order settled
    sold_matches_confirmed: bool


@dataclass
class Result:
    system: str
    load: Load
    summary: Summary
    cpu_seconds: dict[str, float]
    counts: probes.Counts
    statuses: dict[str, str] = field(default_factory=dict)  # order id -> its terminal status
    deployment: Deployment | None = None
    stock: StockCheck | None = None

    def per_order(self, value: float | None) -> float | None:
        return None if value is None or not self.load.count else value / self.load.count


def run_orderflow(base: Settings, work: Load, deployment: Deployment, logs: Path | None = None) -> Result:
    overrides: dict[str, Any] = {
        "inventory_partitions": deployment.partitions,
        "log_level": deployment.log_level,
    }
    if deployment.batch_size:
        overrides["batch_size"] = deployment.batch_size
    with sandbox.sandbox("bench", base, **overrides) as settings, _pools(settings, deployment, logs) as pools:
        _stock(settings, work)
        groups: dict[str, Callable[[], list[int]]] = {
            service: partial(probes.with_descendants, pid) for service, pid in pools.items()
        }
        orders = load.make_orders(work, tag=settings.db_prefix[-6:])
        consumed = Topology(partitions=settings.inventory_partitions).consumed_queues
        result = _drive("orderflow", settings, work, orders, _intake, groups, consumed)
        result.deployment = deployment
        result.stock = _check_stock(settings, work, orders, result)
        return result


def run_floor(base: Settings, work: Load) -> Result:
    with sandbox.sandbox("floor", base) as settings:
        database = f"{settings.db_prefix}_floor"
        with floor.running(settings.amqp_url, settings.mongo_url, database) as pids:
            groups: dict[str, Callable[[], list[int]]] = {"floor hops": lambda: pids}
            orders = load.make_orders(work, tag=settings.db_prefix[-6:])
            return _drive("floor", settings, work, orders, floor.intake, groups, list(floor.HOPS))


def _intake(body: bytes) -> Outgoing:
    return Outgoing(topology.INTAKE_EXCHANGE, topology.INTAKE_ROUTING_KEY, body)


def _drive(
    system: str,
    settings: Settings,
    work: Load,
    orders: list[dict[str, Any]],
    target: Callable[[bytes], Outgoing],
    groups: dict[str, Callable[[], list[int]]],
    queues: list[str],
) -> Result:
    bodies = [(order["order_id"], json.dumps(order).encode()) for order in orders]
    meter = probes.CpuMeter(
        {
            **groups,
            "rabbitmq": lambda: probes.pids_running(r"beam\.smp"),
            "ferretdb": lambda: probes.pids_running(r"ferretdb.*--listen-addr"),
            "benchmark": lambda: [os.getpid()],
        }
    )
    tls = AmqpTls.of(settings)
    publisher = Publisher(settings.amqp_url, tls)
    progress = Progress(system, len(bodies))
    try:
        with OutcomeWatcher(settings.amqp_url, tls) as watcher:
            outcomes = watcher.outcomes
            before = probes.counts(settings.mongo_url)
            meter.start()
            published = load.publish(
                publisher, work, bodies, target, lambda n: progress.show(n, len(outcomes.settled))
            )
            _wait_until_settled(
                outcomes, len(bodies), lambda: progress.show(len(published), len(outcomes.settled))
            )
            progress.done()
            _wait_until_drained(settings, queues)
            cpu = meter.stop()
            after = probes.counts(settings.mongo_url)
            observed = load.observed(published, outcomes)
            counted = after - before
            # Take away what the benchmark itself sent and received.
            counted = probes.Counts(
                None if counted.published is None else counted.published - len(bodies),
                None if counted.delivered is None else counted.delivered - outcomes.received,
                counted.store_operations,
            )
            statuses = {order.order_id: order.status for order in observed if order.status is not None}
            return Result(system, work, summarize(observed, outcomes.duplicates), cpu, counted, statuses)
    finally:
        publisher.close()


def _wait_until_settled(outcomes: load.Outcomes, expected: int, show: Callable[[], None]) -> None:
    last, progressed = -1, time.monotonic()
    while True:
        settled = len(outcomes.settled)
        if settled >= expected:
            show()
            return
        if settled != last:
            last, progressed = settled, time.monotonic()
        elif time.monotonic() - progressed > STALL_SECONDS:
            return
        show()
        time.sleep(0.2)


def _wait_until_drained(settings: Settings, queues: list[str], limit: float = 30.0) -> None:
    """Until every one of `queues` is empty twice in a row, half a second apart: the work that
    trails the outcomes (commits, notifications, reports) is done. Orderflow's step timers still
    waiting in its delay queues are left out: they fire a step timeout later, whatever the run."""
    probe = RabbitQueueProbe(settings.amqp_url, AmqpTls.of(settings))
    deadline, empty_before = time.monotonic() + limit, False
    try:
        while time.monotonic() < deadline:
            empty = all(probe.backlog(queue).ready == 0 for queue in queues)
            if empty and empty_before:
                return
            empty_before = empty
            time.sleep(0.5)
    finally:
        probe.close()


@contextmanager
def _pools(settings: Settings, deployment: Deployment, logs: Path | None) -> Iterator[dict[str, int]]:
    """Every worker pool as a process of its own (`orderflow worker`); yields their pids."""
    directory = logs or Path(tempfile.mkdtemp(prefix="orderflow-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, **sandbox.environment(settings)}
    running: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for service in SERVICES:
            log = (directory / f"{service}.log").open("ab")
            running[service] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.cli",
                    "worker",
                    service,
                    "--processes",
                    str(deployment.processes_of(service)),
                    "--threads",
                    str(deployment.threads),
                ],
                env={**environment, "ORDERFLOW_METRICS_PORT": str(_free_port())},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_until_consuming(settings, deployment, running)
        yield {service: process.pid for service, process in running.items()}
    finally:
        for process in running.values():
            process.send_signal(signal.SIGTERM)
        for process in running.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_consuming(
    settings: Settings, deployment: Deployment, running: dict[str, subprocess.Popen[bytes]]
) -> None:
    queues = [
        topology.ORDER_INTAKE_QUEUE,
        topology.ORDER_SAGA_QUEUE,
        topology.PAYMENT_QUEUE,
        topology.NOTIFICATION_EVENTS_QUEUE,
        topology.REPORTING_EVENTS_QUEUE,
        *topology.Topology(partitions=deployment.partitions).stock_queues,
    ]

    def exited() -> str | None:
        for service, process in running.items():
            if (code := process.poll()) is not None:
                return f"the {service} pool exited with code {code}"
        return None

    probes.wait_until_consuming(settings.amqp_url, queues, exited, tls=AmqpTls.of(settings))


def _stock(settings: Settings, work: Load) -> None:
    """Every SKU of the load, with enough units for every order."""
    units = work.count * work.lines
    commands = [
        saga.SetStock(
            partition=topology.partition_of(sku, settings.inventory_partitions),
            sku=sku,
            quantity=units,
            price=UNIT_PRICE,
            name=f"Bench item {sku}",
            low_stock_threshold=0,
        )
        for sku in load.sku_names(work)
    ]
    transport = Transport(settings)
    try:
        transport.send(*commands)
    finally:
        transport.close()
    products = ProductRepository(store.database(store.connect(settings), settings, "inventory"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stocked = products.get_many(command.sku for command in commands)
        if all(
            command.sku in stocked and command.message_id in stocked[command.sku].recent_operations
            for command in commands
        ):
            return
        time.sleep(0.2)
    raise RuntimeError("the inventory worker did not stock the benchmark's SKUs within 60 s")


def _check_stock(settings: Settings, work: Load, orders: list[dict[str, Any]], result: Result) -> StockCheck:
    confirmed = {order_id for order_id, status in result.statuses.items() if status == "confirmed"}
    sold: Counter[str] = Counter()
    for order in orders:
        if order["order_id"] in confirmed:
            for item in order["items"]:
                sold[item["sku"]] += item["quantity"]
    stocked = work.count * work.lines
    products = ProductRepository(store.database(store.connect(settings), settings, "inventory")).get_many(
        load.sku_names(work)
    )
    return StockCheck(
        conserved=all(p.available + p.reserved + p.sold == stocked for p in products.values()),
        oversold=any(p.available < 0 or p.sold > stocked for p in products.values()),
        reserved_left=sum(p.reserved for p in products.values()),
        sold_matches_confirmed=all(p.sold == sold.get(sku, 0) for sku, p in products.items()),
    )
