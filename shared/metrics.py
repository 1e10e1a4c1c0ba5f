"""Prometheus metrics: every metric Orderflow exports, and how a worker pool serves them.

Names follow Prometheus conventions: an `orderflow_` prefix, base units (seconds), `_total` for
counters, and label values from small fixed sets (never an order or customer id). A pool of several
processes shares one endpoint: its supervisor serves what its children write to a shared directory
(prometheus-client's multiprocess mode). The same endpoint answers /healthz and /readyz
(shared/health.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
    multiprocess,
)

from shared import health

log = logging.getLogger(__name__)

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SAGA_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)

# Transport: every message consumed, from a dramatiq queue or a public (kombu) queue.
MESSAGES = Counter(
    "orderflow_messages_processed_total",
    "Messages handled, by queue, handler and outcome (succeeded, retried, failed).",
    ["queue", "handler", "outcome"],
)
MESSAGE_SECONDS = Histogram(
    "orderflow_message_processing_seconds",
    "Time spent handling a message.",
    ["queue", "handler"],
    buckets=SECONDS,
)
DEAD_LETTERS = Counter(
    "orderflow_messages_dead_lettered_total",
    "Messages moved to a dead-letter queue, by source queue and why (invalid, permanent, exhausted).",
    ["queue", "why"],
)
DEAD_LETTERS_REFUSED = Counter(
    "orderflow_dead_letters_refused_total",
    "Messages a full dead-letter queue refused, by source queue: they wait in their queue's retries.",
    ["queue"],
)

# Business: the order saga.
ORDERS = Counter(
    "orderflow_orders_total",
    "Orders by status reached (accepted, confirmed, shipped, completed, cancelled, rejected) and reason.",
    ["status", "reason"],
)
SAGA_SECONDS_HISTOGRAM = Histogram(
    "orderflow_saga_duration_seconds",
    "From acceptance to confirmation or cancellation.",
    ["status"],
    buckets=SAGA_SECONDS,
)
STEP_SECONDS = Histogram(
    "orderflow_saga_step_duration_seconds",
    "Time an order spent in a saga step before moving on.",
    ["step"],
    buckets=SAGA_SECONDS,
)
COMPENSATIONS = Counter(
    "orderflow_saga_compensations_total", "Sagas that had to undo a step, by reason.", ["reason"]
)
SAGAS_PENDING = Gauge(
    "orderflow_sagas_pending", "Orders whose saga is under way.", multiprocess_mode="livemax"
)
OLDEST_PENDING_SAGA = Gauge(
    "orderflow_saga_oldest_pending_seconds",
    "Age of the oldest saga under way, since its order was accepted (as of the last sweep).",
    multiprocess_mode="livemax",
)
COMPENSATIONS_OVERDUE = Gauge(
    "orderflow_compensations_overdue",
    "Orders whose release or refund has been outstanding longer than"
    " ORDERFLOW_COMPENSATION_GRACE (as of the last sweep).",
    multiprocess_mode="livemax",
)
STOCK_HOLDS_OVERDUE = Gauge(
    "orderflow_stock_holds_overdue",
    "Reservations still holding units longer than ORDERFLOW_COMPENSATION_GRACE: a commit or release"
    " that never arrived (as of the last check).",
    multiprocess_mode="livemax",
)
ORDER_REFUNDS = Counter(
    "orderflow_order_refunds_total",
    "Refunds of money captured for orders (a cancel, an amendment, a return).",
)
ORDER_CHANGES = Counter(
    "orderflow_order_changes_total",
    "Requests about placed orders (cancel, amend, ship, complete, return, exchange), by outcome"
    " (done or rejected).",
    ["kind", "outcome"],
)
SAGAS_OVERDUE = Gauge(
    "orderflow_sagas_overdue",
    "Pending sagas past their step's deadline, as last seen.",
    multiprocess_mode="livemax",
)

# Business: stock.
STOCK_AVAILABLE = Gauge(
    "orderflow_stock_available", "Units available per SKU.", ["sku"], multiprocess_mode="livemax"
)
STOCK_RESERVED = Gauge(
    "orderflow_stock_reserved", "Units reserved per SKU.", ["sku"], multiprocess_mode="livemax"
)
STOCK_LOW = Gauge(
    "orderflow_stock_low",
    "1 when a SKU's available units are below its threshold.",
    ["sku"],
    multiprocess_mode="livemax",
)
LOW_STOCK_ALERTS = Counter("orderflow_low_stock_alerts_total", "Low-stock alerts raised.")

# Business: payments.
PAYMENTS = Counter(
    "orderflow_payments_total",
    "Payments by method and outcome (captured, declined, failed).",
    ["method", "outcome"],
)
PAYMENT_AMOUNT = Counter(
    "orderflow_payments_captured_minor_units_total",
    "Money captured, in minor units of the currency.",
    ["method", "currency"],
)
REFUNDS = Counter("orderflow_refunds_total", "Refunds of captured payments.", ["method"])
GATEWAY_REQUESTS = Counter(
    "orderflow_gateway_requests_total",
    "Calls to a payment gateway by method and outcome (approved, declined, error).",
    ["method", "outcome"],
)

# Business: notifications and reporting.
NOTIFICATIONS = Counter(
    "orderflow_notifications_total",
    "Notifications by channel (email, log), kind and outcome (sent, failed).",
    ["channel", "kind", "outcome"],
)
REPORT_LAG = Gauge(
    "orderflow_report_lag_seconds",
    "How long after it happened the last event reached the sales read model.",
    multiprocess_mode="livemax",
)


def serve(port: int, address: str, probe: health.Probe, multiprocess_dir: str | None = None) -> int:
    """Serve /metrics (this process's metrics or, with a directory, those of all a pool's processes)
    and /healthz and /readyz (from `probe`) in a thread of their own; the port bound is returned
    (`port` 0: any free one)."""
    registry = REGISTRY
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
    family, *_, bound = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    server = _Server((str(bound[0]), port), family)
    server.set_app(health.with_probes(probe, make_wsgi_app(registry)))
    threading.Thread(target=server.serve_forever, name="metrics-endpoint", daemon=True).start()
    return int(server.server_port)


class _Server(ThreadingMixIn, WSGIServer):
    """A thread per request, as prometheus-client's own server, in the address's family (IPv4 or 6)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family
        super().__init__(address, _Quiet)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and probes come every few seconds: no line for each."""


@contextmanager
def pool_directory() -> Iterator[str]:
    """A fresh directory where a pool's processes write their metrics; set in the environment so the
    processes spawned inside the block use it."""
    directory = tempfile.mkdtemp(prefix="orderflow-metrics-")
    previous = os.environ.get(MULTIPROC_DIR_ENV)
    os.environ[MULTIPROC_DIR_ENV] = directory
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_DIR_ENV, None)
        else:
            os.environ[MULTIPROC_DIR_ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)


def process_exited(pid: int) -> None:
    """Forget the live gauges of a pool process that exited."""
    if os.environ.get(MULTIPROC_DIR_ENV):
        multiprocess.mark_process_dead(pid)
