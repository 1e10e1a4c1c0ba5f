"""`make run`: start all five workers, push a sample batch through, show the outcomes, keep running.

The batch has orders that confirm and orders that cancel for every reason, plus one invalid order,
so a newcomer sees each path of the saga once. Stop with Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from services.bench.probes import wait_until_consuming
from services.inventory import cli as inventory
from services.order.store import OrderRepository
from services.reporting import cli as reporting
from services.reporting.store import SalesFacts
from shared import sandbox, store
from shared.messaging import topology
from shared.messaging.publisher import Outgoing
from shared.messaging.transport import Transport
from shared.settings import Settings

ORDERFLOW = str(Path(sys.executable).with_name("orderflow"))
CATALOG = [
    ("MUG-BLUE", 20, "12.50", "Blue mug", 5),
    ("TEA-GREEN", 100, "3.20", "Green tea", 10),
    ("KETTLE", 1, "89.00", "Kettle", 0),
]


def sample_batch(tag: str) -> list[dict]:
    def order(
        n: int, items: list[tuple[str, int]], method: str = "credit_card", token: str = "tok_visa"
    ) -> dict:
        return {
            "order_id": f"DEMO-{tag}-{n}",
            "customer": {
                "customer_id": f"C-{n}",
                "name": f"Customer {n}",
                "email": f"customer{n}@example.com",
            },
            "items": [{"sku": sku, "quantity": quantity} for sku, quantity in items],
            "payment": {"method": method, "token": token},
        }

    return [
        order(1, [("MUG-BLUE", 2), ("TEA-GREEN", 3)]),
        order(2, [("TEA-GREEN", 10)], method="alipay"),
        order(3, [("KETTLE", 1)], method="wechat_pay"),
        order(4, [("KETTLE", 1)]),  # one kettle for orders 3 and 4: one of them is out_of_stock
        order(5, [("NOT-IN-CATALOG", 1)]),  # unknown_sku
        order(6, [("MUG-BLUE", 1)], token="tok_declined"),  # payment_declined
        order(7, [("MUG-BLUE", 1)], token="tok_gateway_error"),  # payment_failed, after retries
        order(8, [("MUG-BLUE", -1)]),  # rejected: invalid
    ]


def wait_until_ready(settings: Settings, timeout: float = 90) -> None:
    queues = topology.Topology(partitions=settings.inventory_partitions).consumed_queues
    try:
        wait_until_consuming(settings.amqp_url, queues, exited=lambda: None, limit=timeout)
    except RuntimeError as e:
        raise SystemExit(f"the workers did not start: {e}") from e


def _all_reported(recorded: dict[str, set[str]], order_ids: list[str]) -> bool:
    return all(
        recorded.get(order_id, set()) & {"confirmed", "cancelled", "rejected"} for order_id in order_ids
    )


def main() -> int:
    # Every worker, the CLI and the sample upstream system as the broker user of their role, as
    # `make services` created them (the administrative URL if it did not).
    for variable, url in sandbox.local_role_urls().items():
        os.environ.setdefault(variable, url)
    settings = Settings()
    # Quieter workers, so the outcomes stand out; ORDERFLOW_LOG_LEVEL=INFO shows every step.
    workers = subprocess.Popen([ORDERFLOW, "run"], env={"ORDERFLOW_LOG_LEVEL": "WARNING", **os.environ})
    signal.signal(signal.SIGINT, lambda *_: None)  # the workers get Ctrl-C too; we wait for them
    try:
        wait_until_ready(settings)
        print("\n== all five workers are up; stocking the catalog")
        for sku, quantity, price, name, threshold in CATALOG:
            inventory.set_stock(settings, sku, quantity, price, name, threshold, wait=30)

        batch = sample_batch(time.strftime("%H%M%S"))
        print(f"\n== submitting {len(batch)} orders to the intake exchange")
        transport = Transport(settings, "upstream")
        try:
            transport.publisher.publish(
                [
                    Outgoing(
                        topology.INTAKE_EXCHANGE, topology.INTAKE_ROUTING_KEY, json.dumps(order).encode()
                    )
                    for order in batch
                ]
            )
        finally:
            transport.close()

        orders = OrderRepository(store.database(store.connect(settings), settings, "order"))
        print("\n== outcomes")
        for order in batch:
            deadline = time.monotonic() + 60
            while (found := orders.get(order["order_id"])) is None or found.status == "pending":
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            outcome = (
                f"{found.status} ({found.reason})"
                if found and found.reason
                else (found.status if found else "?")
            )
            print(f"  {order['order_id']:<20} {outcome}")

        facts = SalesFacts(store.database(store.connect(settings), settings, "reporting"))
        ids = [order["order_id"] for order in batch]
        deadline = time.monotonic() + 30
        while not _all_reported(facts.statuses_of(ids), ids) and time.monotonic() < deadline:
            time.sleep(0.2)
        print("\n== sales report")
        reporting.sales(settings, as_json=False)
        print("\n== stock")
        inventory.show_stock(settings, [], as_json=False)
        print("\nWorkers keep running: try `.venv/bin/orderflow status DEMO-...`. Ctrl-C stops them.")
        return workers.wait()
    finally:
        if workers.poll() is None:
            workers.send_signal(signal.SIGTERM)
            workers.wait(60)


if __name__ == "__main__":
    sys.exit(main())
