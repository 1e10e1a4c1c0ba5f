"""The load of a benchmark: orders to publish, publishing them, and watching for their outcomes."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kombu import Consumer, Queue, binding

from services.bench.stats import Observed
from shared.messaging import topology
from shared.messaging.publisher import Outgoing, Publisher
from shared.messaging.tls import AmqpTls

TERMINAL_EVENTS = ("order.confirmed", "order.cancelled", "order.rejected")
DECLINED_TOKEN = "tok_declined"


@dataclass(frozen=True)
class Load:
    """What to publish: `orders` at once, or `rate` per second for `duration` seconds."""

    orders: int = 1000
    rate: float | None = None
    duration: float | None = None
    skus: int = 20
    lines: int = 1
    decline_ratio: float = 0.0
    seed: int = 7

    @property
    def count(self) -> int:
        if self.rate is not None and self.duration is not None:
            return round(self.rate * self.duration)
        return self.orders

    def describe(self) -> str:
        shape = (
            f"{self.rate:g}/s for {self.duration:g} s" if self.rate is not None else f"{self.orders} at once"
        )
        return f"{shape}, {self.lines} line(s) over {self.skus} SKUs, {self.decline_ratio:.0%} declined"


def sku_names(load: Load) -> list[str]:
    return [f"BENCH-{n:03d}" for n in range(load.skus)]


def make_orders(load: Load, tag: str) -> list[dict[str, Any]]:
    """The orders of a run: each line a different SKU, spread evenly; some paid with a declined token."""
    chooser = random.Random(load.seed)
    skus = sku_names(load)
    orders = []
    for n in range(load.count):
        declined = chooser.random() < load.decline_ratio
        orders.append(
            {
                "order_id": f"B-{tag}-{n:06d}",
                "customer": {
                    "customer_id": f"C-{n % 97}",
                    "name": "Bench",
                    "email": f"bench{n % 97}@example.com",
                },
                "items": [
                    {"sku": skus[(n * load.lines + line) % len(skus)], "quantity": 1}
                    for line in range(load.lines)
                ],
                "payment": {"method": "credit_card", "token": DECLINED_TOKEN if declined else "tok_visa"},
            }
        )
    return orders


@dataclass
class Outcomes:
    """Terminal events seen on the events exchange: the first of each order, and repeats."""

    settled: dict[str, tuple[float, str, str | None]] = field(default_factory=dict)
    duplicates: int = 0
    received: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, body: bytes) -> None:
        at = time.monotonic()
        event = json.loads(body)
        with self.lock:
            self.received += 1
            if event["order_id"] in self.settled:
                self.duplicates += 1
            else:
                self.settled[event["order_id"]] = (at, event.get("status", ""), event.get("reason"))


class OutcomeWatcher:
    """Subscribes to terminal events as an outside system would: a queue of its own on the exchange."""

    def __init__(self, amqp_url: str, tls: AmqpTls | None = None) -> None:
        self.outcomes = Outcomes()
        self._url = amqp_url
        self._tls = tls or AmqpTls()
        self._queue = Queue(
            f"bench.outcomes.{id(self)}",
            bindings=[binding(topology.EVENTS, routing_key=key) for key in TERMINAL_EVENTS],
            exclusive=True,
        )
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-outcomes", daemon=True)

    def __enter__(self) -> OutcomeWatcher:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("could not subscribe to the events exchange")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with self._tls.connection(self._url) as connection, connection.channel() as channel:
            self._queue.bind(channel).declare()
            with Consumer(
                channel, queues=[self._queue], no_ack=True, on_message=lambda m: self.outcomes.record(m.body)
            ):
                self._ready.set()
                while not self._stop.is_set():
                    try:
                        connection.drain_events(timeout=0.2)
                    except TimeoutError:
                        continue


def publish(
    publisher: Publisher,
    load: Load,
    bodies: list[tuple[str, bytes]],
    target: Callable[[bytes], Outgoing],
    progress: Callable[[int], None],
) -> dict[str, float]:
    """Publish every body, at once or paced; returns when each order was published."""
    published: dict[str, float] = {}
    if load.rate is None:
        chunk = 200
        for start in range(0, len(bodies), chunk):
            part = bodies[start : start + chunk]
            at = time.monotonic()
            publisher.publish([target(body) for _, body in part])
            published.update((order_id, at) for order_id, _ in part)
            progress(len(published))
        return published
    began = time.monotonic()
    for n, (order_id, body) in enumerate(bodies):
        due = began + n / load.rate
        time.sleep(max(0.0, due - time.monotonic()))
        published[order_id] = time.monotonic()
        publisher.publish([target(body)])
        if n % 50 == 0:
            progress(len(published))
    return published


def observed(published: dict[str, float], outcomes: Outcomes) -> list[Observed]:
    with outcomes.lock:
        settled = dict(outcomes.settled)
    return [
        Observed(order_id, at, *settled[order_id]) if order_id in settled else Observed(order_id, at)
        for order_id, at in published.items()
    ]


class Progress:
    """A one-line progress report on a terminal; silent otherwise."""

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self.enabled = sys.stderr.isatty()
        self.started = time.monotonic()

    def show(self, published: int, settled: int) -> None:
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        sys.stderr.write(
            f"\r  {self.label}: published {published}/{self.total}, settled {settled} "
            f"({settled / elapsed:.0f}/s)   "
        )
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
