"""The whole system as separate processes, driven only through the intake, the events and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.messaging import topology
from shared.messaging.exchanges import INTAKE, EventPublisher, connect, declare_public_topology
from shared.settings import Settings
from tests.support import (
    EventCollector,
    SmtpInbox,
    consumer_count,
    isolated_settings,
    settings_env,
    unique,
    wait_for,
)

ORDERFLOW = str(Path(sys.executable).with_name("orderflow"))
OPERATORS = "ops@example.com"

# (service, processes): two inventory processes, so one stands by on the single-active-consumer queue.
POOLS = [("order", 1), ("inventory", 2), ("payment", 1), ("notification", 1), ("reporting", 1)]
CONSUMERS = {
    topology.ORDER_INTAKE_QUEUE: 1,
    topology.ORDER_SAGA_QUEUE: 1,
    topology.INVENTORY_QUEUE: 2,
    topology.PAYMENT_QUEUE: 1,
    topology.NOTIFICATION_EVENTS_QUEUE: 1,
    topology.REPORTING_EVENTS_QUEUE: 1,
}


@dataclass
class System:
    settings: Settings
    env: dict[str, str]
    events: EventCollector
    inbox: SmtpInbox
    publisher: EventPublisher

    def cli(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [ORDERFLOW, *args], env=self.env, input=stdin, capture_output=True, text=True, timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"orderflow {' '.join(args)} exited {result.returncode}: {result.stdout}{result.stderr}"
            )
        return result

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def submit(self, order: dict[str, Any] | bytes, content_type: str = "application/json") -> None:
        """Publish to the intake exchange, as an upstream system does."""
        raw = order if isinstance(order, bytes) else json.dumps(order).encode()
        self.publisher.publish_raw(INTAKE, topology.INTAKE_ROUTING_KEY, raw, content_type=content_type)

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


@pytest.fixture(scope="package")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    logs = tmp_path_factory.mktemp("worker-logs")
    with SmtpInbox() as inbox, isolated_settings(smtp_url=inbox.url, operator_email=OPERATORS) as settings:
        env = {**os.environ, **settings_env(settings), "ORDERFLOW_OPERATOR_EMAIL": OPERATORS}
        processes = []
        for service, count in POOLS:
            log = (logs / f"{service}.log").open("w")
            processes.append(
                subprocess.Popen(
                    [ORDERFLOW, "worker", service, "--processes", str(count), "--threads", "4"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        try:
            for queue, expected in CONSUMERS.items():
                wait_for(
                    lambda q=queue, n=expected: consumer_count(settings.amqp_url, q) >= n,
                    timeout=60,
                    interval=0.2,
                    what=f"{expected} consumer(s) on {queue}",
                )
            with EventCollector(settings.amqp_url) as events, connect(settings.amqp_url) as connection:
                declare_public_topology(connection)
                yield System(settings, env, events, inbox, EventPublisher(connection))
        finally:
            for process in processes:
                process.send_signal(signal.SIGTERM)
            codes = [process.wait(timeout=90) for process in processes]
            for service, _ in POOLS:
                errors = [
                    line
                    for line in (logs / f"{service}.log").read_text().splitlines()
                    if '"critical"' in line
                ]
                assert not errors, f"{service} logged critical errors: {errors[:3]}"
            assert codes == [0] * len(processes), f"workers did not stop cleanly: {codes}"


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
