"""The whole system as separate worker processes, for end-to-end and fault tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from shared.messaging import topology
from shared.settings import Settings
from tests.support import (
    EventCollector,
    Publish,
    SmtpInbox,
    consumer_count,
    free_port,
    isolated_settings,
    settings_env,
    unique,
    wait_for,
)

ORDERFLOW = str(Path(sys.executable).with_name("orderflow"))
OPERATORS = "ops@example.com"
SERVICES = ("order", "inventory", "payment", "notification", "reporting")
QUEUES_OF = {
    "order": [topology.ORDER_INTAKE_QUEUE, topology.ORDER_REQUESTS_QUEUE, topology.ORDER_SAGA_QUEUE],
    "inventory": [topology.stock_queue(0)],
    "payment": [topology.PAYMENT_QUEUE],
    "notification": [topology.NOTIFICATION_EVENTS_QUEUE],
    "reporting": [topology.REPORTING_EVENTS_QUEUE],
}


@dataclass
class Workers:
    """Worker processes, one `orderflow worker` each, that a test may kill and restart."""

    env: dict[str, str]
    logs: Path
    running: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    metrics_ports: dict[int, tuple[str, int]] = field(default_factory=dict)  # pid -> (service, port)
    exit_codes: list[int] = field(default_factory=list)

    def start(self, service: str, processes: int = 1, threads: int = 4) -> subprocess.Popen[bytes]:
        """Start a pool; each pool serves its metrics on a free port of its own."""
        log = (self.logs / f"{service}.log").open("a")
        port = free_port()
        process = subprocess.Popen(
            [ORDERFLOW, "worker", service, "--processes", str(processes), "--threads", str(threads)],
            env={**self.env, "ORDERFLOW_METRICS_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.running.setdefault(service, []).append(process)
        self.metrics_ports[process.pid] = (service, port)
        return process

    def metrics_targets(self) -> dict[str, list[str]]:
        """Where each running pool serves /metrics, by service."""
        targets: dict[str, list[str]] = {}
        for processes in self.running.values():
            for process in processes:
                service, port = self.metrics_ports[process.pid]
                targets.setdefault(service, []).append(f"127.0.0.1:{port}")
        return targets

    def kill(self, service: str, index: int = 0) -> None:
        """SIGKILL one process of a pool: no draining, no goodbye."""
        process = self.running[service].pop(index)
        process.kill()
        process.wait(30)

    def stop(self, service: str) -> list[int]:
        """SIGTERM every process of a pool and wait for it to drain."""
        processes = self.running.pop(service, [])
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(90) for process in processes]
        self.exit_codes.extend(codes)
        return codes

    def stop_all(self) -> list[int]:
        for service in list(self.running):
            self.stop(service)
        return self.exit_codes


@dataclass
class System:
    settings: Settings
    env: dict[str, str]
    workers: Workers
    events: EventCollector
    inbox: SmtpInbox
    publish: Publish

    def cli(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [ORDERFLOW, *args], env=self.env, input=stdin, capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"orderflow {' '.join(args)} exited {result.returncode}: {result.stdout}{result.stderr}"
            )
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def submit(self, order: dict[str, Any] | bytes, content_type: str | None = "application/json") -> None:
        """Publish to the intake exchange, as an upstream system does."""
        self.publish.order(order, content_type)

    def stock(self, sku: str, quantity: int, price: str = "12.50", threshold: int = 0) -> None:
        self.cli(
            "stock",
            "set",
            sku,
            "--quantity",
            str(quantity),
            "--price",
            price,
            "--low-stock-threshold",
            str(threshold),
        )

    def levels(self, sku: str) -> tuple[int, int]:
        (product,) = self.cli_json("stock", "show", sku)
        return product["available"], product["reserved"]

    def outcome(self, order_id: str, timeout: float = 60.0) -> dict[str, Any]:
        return self.events.outcome(order_id, timeout=timeout)

    def emails_to(self, address: str) -> list[Any]:
        return self.inbox.to(address)

    def database(self, name: str) -> Any:
        """A database, read only to check what the system did (the provider's ledger, say)."""
        return MongoClient(self.settings.mongo_url, tz_aware=True)[f"{self.settings.db_prefix}_{name}"]

    def wait_until_consuming(self, service: str, consumers: int = 1) -> None:
        for queue in QUEUES_OF[service]:
            # A quorum queue counts only the active one of its single active consumers.
            single = self.settings.quorum_queues and queue.startswith(topology.STOCK_QUEUE_PREFIX)
            expected = 1 if single else consumers
            wait_for(
                lambda q=queue, n=expected: consumer_count(self.settings.amqp_url, q) >= n,
                timeout=90,
                interval=0.2,
                what=f"{expected} consumer(s) on {queue}",
            )


@contextmanager
def running_system(
    logs: Path,
    pools: dict[str, int],
    *,
    base: Settings | None = None,
    node: str | None = None,
    management_url: str | None = None,
    **settings_overrides: Any,
) -> Iterator[System]:
    """Start every pool in `pools` (service -> separate single-process workers) against fresh
    settings, on the broker and store of `base` (RabbitMQ node `node`, management API
    `management_url`) if given."""
    with (
        SmtpInbox() as inbox,
        isolated_settings(
            base=base,
            node=node,
            management_url=management_url,
            smtp_url=inbox.url,
            operator_email=OPERATORS,
            **settings_overrides,
        ) as settings,
    ):
        env = {**os.environ, **settings_env(settings), "ORDERFLOW_OPERATOR_EMAIL": OPERATORS}
        env.update({f"ORDERFLOW_{k.upper()}": str(v) for k, v in settings_overrides.items()})
        workers = Workers(env, logs)
        try:
            for service, count in pools.items():
                for _ in range(count):
                    workers.start(service)
            with (
                EventCollector(settings.amqp_url_of("subscriber"), quorum=settings.quorum_queues) as events,
                Publish(settings) as publish,
            ):
                system = System(settings, env, workers, events, inbox, publish)
                for service, count in pools.items():
                    system.wait_until_consuming(service, count)
                yield system
        finally:
            codes = workers.stop_all()
            assert all(code == 0 for code in codes), f"workers did not stop cleanly: {codes}; logs in {logs}"


def new_order(
    *items: tuple[str, int], token: str = "tok_visa", method: str = "credit_card", email: str | None = None
):
    order_id = unique("E2E")
    return {
        "order_id": order_id,
        "customer": {
            "customer_id": "C-1",
            "name": "Alice",
            "email": email or f"{order_id.lower()}@example.com",
        },
        "items": [{"sku": sku, "quantity": quantity} for sku, quantity in items],
        "payment": {"method": method, "token": token},
    }
