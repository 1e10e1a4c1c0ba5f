"""Helpers for tests against the real RabbitMQ and store: isolation, polling, event capture."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

from kombu import Connection, Consumer, Exchange, Queue, binding

from shared import sandbox
from shared.contracts.base import Message
from shared.contracts.events import Event
from shared.messaging import topology
from shared.messaging.publisher import Outgoing
from shared.messaging.transport import Transport
from shared.settings import Settings

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(check: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, what: str = "") -> T:
    """Poll `check` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(interval)


@contextmanager
def isolated_settings(
    *,
    base: Settings | None = None,
    node: str | None = None,
    declared: bool = True,
    management_url: str | None = None,
    **overrides: Any,
) -> Iterator[Settings]:
    """Settings with a RabbitMQ vhost and a database prefix of their own, removed afterwards; on the
    broker and store of `base` (RabbitMQ node `node`, management API `management_url`), if given,
    else the local ones."""
    with sandbox.sandbox(
        "t",
        base,
        node=node,
        declared=declared,
        management_url=management_url,
        min_backoff_ms=50,
        max_backoff_ms=500,
        **overrides,
    ) as settings:
        yield settings


settings_env = sandbox.environment


class Publish:
    """Publishes, confirmed, as an upstream system, an outside publisher or another worker would."""

    def __init__(self, settings: Settings) -> None:
        self.transport = Transport(settings)
        self.transport.declare()
        # Orders and requests go in as an upstream system's would: as its broker user, if it has one.
        self.upstream = Transport(settings, "upstream")

    def raw(
        self, exchange: str, routing_key: str, body: bytes, content_type: str | None = "application/json"
    ) -> None:
        self.transport.publisher.publish(
            [
                Outgoing(
                    exchange,
                    routing_key,
                    body,
                    content_type=content_type,
                    content_encoding=None if content_type is None else "utf-8",
                    mandatory=False,
                )
            ]
        )

    def order(self, order: dict[str, Any] | bytes, content_type: str | None = "application/json") -> None:
        """To the intake exchange, as an upstream system does."""
        body = order if isinstance(order, bytes) else json.dumps(order).encode()
        self.upstream.publisher.publish(
            [
                Outgoing(
                    topology.INTAKE_EXCHANGE,
                    topology.INTAKE_ROUTING_KEY,
                    body,
                    content_type=content_type,
                    content_encoding=None if content_type is None else "utf-8",
                    mandatory=False,
                )
            ]
        )

    def request(self, kind: str, body: dict[str, Any] | bytes, message_id: str | None = None) -> None:
        """A request about a placed order (`order.<kind>`) to the intake exchange."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.upstream.publisher.publish(
            [
                Outgoing(
                    topology.INTAKE_EXCHANGE,
                    f"order.{kind}",
                    raw,
                    content_type="application/json",
                    content_encoding="utf-8",
                    message_id=message_id,
                    mandatory=False,
                )
            ]
        )

    def event(self, event: Event) -> None:
        self.raw(topology.EVENTS_EXCHANGE, event.routing_key, event.model_dump_json().encode())

    def saga(self, *messages: Message) -> None:
        """Saga messages, to the queues that consume them, as the workers send them."""
        self.transport.send(*messages)

    def close(self) -> None:
        self.transport.close()
        self.upstream.close()

    def __enter__(self) -> Publish:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def consumer_count(amqp_url: str, queue: str) -> int:
    """How many consumers a queue has (0 if it does not exist yet)."""
    with Connection(amqp_url) as connection, connection.channel() as channel:
        try:
            return channel.queue_declare(queue=queue, passive=True).consumer_count
        except Exception:
            return 0


def queue_depth(amqp_url: str, queue: str) -> int:
    """Messages in a queue, ready or delivered but not yet acknowledged (as rabbitmqctl counts them)."""
    vhost = unquote(urlsplit(amqp_url).path.lstrip("/")) or "/"
    listing = sandbox.rabbitmqctl("list_queues", "-q", "-p", vhost, "name", "messages")
    counts = dict(line.split("\t") for line in listing.splitlines() if "\t" in line)
    return int(counts.get(queue, 0))


def queue_messages(amqp_url: str, queue: str) -> list[tuple[bytes, dict[str, Any]]]:
    """Take every message off a queue (acking them): (body, headers) pairs; none if it does not exist."""
    taken = []
    with Connection(amqp_url) as connection, connection.channel() as channel:
        # no_declare: the owner declared it, possibly with arguments we must not contradict.
        bound = Queue(queue, no_declare=True).bind(channel)
        try:
            while (message := bound.get(no_ack=True)) is not None:
                taken.append((message.body, dict(message.headers or {})))
        except connection.channel_errors:
            pass  # not declared yet
    return taken


class EventCollector:
    """Records every public event, as an outside subscriber would: a durable queue of its own on the
    exchange, consumed across broker restarts; on a cluster (`quorum`), a quorum queue, which
    outlives any one node."""

    def __init__(self, amqp_url: str, quorum: bool = False) -> None:
        self.events: list[dict[str, Any]] = []
        self._url = amqp_url
        # Named and bound as the subscriber role may (its own `subscriber.*` queues, the events
        # exchange only looked up): with the subscriber's URL, it subscribes as one would.
        events = Exchange(topology.EVENTS_EXCHANGE, type="topic", passive=True)
        self._queue = Queue(
            f"subscriber.{unique('test-events')}",
            bindings=[binding(events, routing_key="#")],
            durable=True,
            queue_arguments={"x-queue-type": "quorum"} if quorum else None,
        )
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> EventCollector:
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError("the event collector did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        with Connection(self._url) as connection, connection.channel() as channel:
            self._queue.bind(channel).delete()

    def _run(self) -> None:
        while not self._stop.is_set():
            connection = Connection(self._url)
            try:
                with connection, connection.channel() as channel:
                    self._queue.bind(channel).declare()
                    with Consumer(
                        channel, queues=[self._queue], callbacks=[self._on_message], accept=["json"]
                    ):
                        self._ready.set()
                        while not self._stop.is_set():
                            try:
                                connection.drain_events(timeout=0.2)
                            except TimeoutError:
                                continue
            except (*connection.connection_errors, *connection.channel_errors, OSError):
                time.sleep(0.5)  # the broker is away: come back when it is

    def _on_message(self, body: Any, message: Any) -> None:
        self.events.append(body if isinstance(body, dict) else json.loads(body))
        message.ack()

    def of(self, order_id: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("order_id") == order_id]

    def outcome(self, order_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for the order's terminal event (confirmed, cancelled or rejected)."""
        terminal = ("order.confirmed", "order.cancelled", "order.rejected")
        return wait_for(
            lambda: next((e for e in self.of(order_id) if e["type"] in terminal), None),
            timeout=timeout,
            what=f"the outcome of order {order_id}",
        )

    def outcomes(self) -> dict[str, dict[str, Any]]:
        """The terminal event of every order that has one."""
        terminal = ("order.confirmed", "order.cancelled", "order.rejected")
        return {e["order_id"]: e for e in self.events if e["type"] in terminal}


def dramatiq_payloads(amqp_url: str, queue: str) -> list[dict[str, Any]]:
    """Take every saga message off a dramatiq queue: each one's payload, with its actor's name
    (a dramatiq message carries one or more)."""
    payloads = []
    for raw, _headers in queue_messages(amqp_url, queue):
        message = json.loads(raw)
        for payload in message["args"]:
            payloads.append({"actor": message["actor_name"], "options": message["options"], **payload})
    return payloads


class SmtpInbox:
    """A real SMTP server on loopback (aiosmtpd) that keeps what it receives.

    With `starttls` (a server TLS context) it offers STARTTLS; with `implicit_tls`, it speaks TLS from
    the start (smtps). With `credentials` it offers AUTH, after TLS only unless `auth_in_clear`, and
    records every login attempt, whether or not it succeeds.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
        auth_in_clear: bool = False,
    ) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Any] = []
        self.over_tls: list[bool] = []  # for each message, whether it came over TLS
        self.logins: list[tuple[str, str, bool]] = []  # (user, password, over TLS)
        self.port = port or free_port()
        self.credentials = credentials
        self.scheme = "smtps" if implicit_tls else "smtp"
        self._controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            ssl_context=implicit_tls,
            tls_context=starttls,
            authenticator=self._authenticate if credentials else None,
            # aiosmtpd counts only STARTTLS as TLS; on smtps, every byte is encrypted from the start.
            auth_require_tls=not auth_in_clear and implicit_tls is None,
        )

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes

        self.messages.append(message_from_bytes(envelope.content))
        self.over_tls.append(self._over_tls(server, session))
        return "250 Message accepted"

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult

        user, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((user, password, self._over_tls(server, session)))
        return AuthResult(success=(user, password) == self.credentials, handled=False)

    @staticmethod
    def _over_tls(server: Any, session: Any) -> bool:
        return session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None

    @property
    def url(self) -> str:
        user = ":".join(quote(part, safe="") for part in self.credentials) + "@" if self.credentials else ""
        return f"{self.scheme}://{user}127.0.0.1:{self.port}"

    def to(self, recipient: str) -> list[Any]:
        return [m for m in self.messages if m["To"] == recipient]

    def __enter__(self) -> SmtpInbox:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


def saga_replies(amqp_url: str, count: int) -> list[dict[str, Any]]:
    """Wait for `count` replies on the order worker's saga queue (taking them off it)."""
    collected: list[dict[str, Any]] = []

    def enough() -> bool:
        collected.extend(dramatiq_payloads(amqp_url, topology.ORDER_SAGA_QUEUE))
        return len(collected) >= count

    wait_for(enough, what=f"{count} replies")
    return collected
