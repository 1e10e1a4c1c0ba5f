"""`make bench`: end-to-end throughput and saga latency of the five workers on this machine.

Starts `orderflow run` against a database prefix of its own, stocks a few SKUs, publishes N orders
to the intake as fast as it can, and reports how long they took to settle and the percentiles of
acceptance-to-outcome time, read from each order's history. Usage: bench.py [ORDERS] [THREADS]
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from services.order.domain import OrderStatus
from services.order.store import OrderRepository
from shared import store
from shared.messaging import topology
from shared.messaging.exchanges import INTAKE, EventPublisher, connect, declare_public_topology
from shared.settings import Settings

ORDERFLOW = str(Path(sys.executable).with_name("orderflow"))


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    threads = sys.argv[2] if len(sys.argv) > 2 else "4"
    prefix = f"bench_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "ORDERFLOW_DB_PREFIX": prefix, "ORDERFLOW_LOG_LEVEL": "WARNING"}
    settings = Settings(db_prefix=prefix)
    workers = subprocess.Popen([ORDERFLOW, "run", "--threads", threads], env=env, stdout=subprocess.DEVNULL)
    try:
        skus = [f"BENCH-{n}" for n in range(10)]
        for sku in skus:
            subprocess.run(
                [ORDERFLOW, "stock", "set", sku, "--quantity", str(count), "--price", "1.00", "--wait", "90"],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        tag = uuid.uuid4().hex[:6]
        orders = [
            {
                "order_id": f"B-{tag}-{n}",
                "customer": {"customer_id": f"C-{n}", "name": "Bench", "email": f"bench{n}@example.com"},
                "items": [{"sku": skus[n % len(skus)], "quantity": 1}],
                "payment": {"method": "credit_card", "token": "tok_visa"},
            }
            for n in range(count)
        ]
        started = time.monotonic()
        with connect(settings.amqp_url) as connection:
            declare_public_topology(connection)
            publisher = EventPublisher(connection)
            for order in orders:
                publisher.publish_raw(INTAKE, topology.INTAKE_ROUTING_KEY, json.dumps(order).encode())
        published = time.monotonic() - started
        repository = OrderRepository(store.database(store.connect(settings), settings, "order"))
        pending = {order["order_id"] for order in orders}
        latencies: list[float] = []
        while pending and time.monotonic() - started < 600:
            for order_id in list(pending):
                order = repository.get(order_id)
                if order is not None and order.status is not OrderStatus.PENDING:
                    pending.discard(order_id)
                    latencies.append((order.history[-1].at - order.history[0].at).total_seconds())
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        settled = count - len(pending)
        cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
        print(f"orders: {count} published in {published:.1f} s, {settled} settled in {elapsed:.1f} s")
        print(f"throughput: {settled / elapsed:.0f} orders/s end to end ({threads} threads per worker)")
        p50, p95, p99 = cuts[49], cuts[94], cuts[98]
        print(f"saga latency (accepted to outcome): p50 {p50:.2f} s, p95 {p95:.2f} s, p99 {p99:.2f} s")
        return 0 if not pending else 1
    finally:
        workers.send_signal(signal.SIGTERM)
        workers.wait(60)
        client = store.connect(settings)
        for name in client.list_database_names():
            if name.startswith(prefix):
                client.drop_database(name)


if __name__ == "__main__":
    sys.exit(main())
