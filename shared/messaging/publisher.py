"""Publishing with publisher confirms, a whole batch per round trip.

Everything a handler says (its events, its commands, its retries and dead letters) is published
together and confirmed together: RabbitMQ confirms a burst of publishes with one round trip and
one disk sync, where waiting for each message costs a round trip and a sync apiece (measured on
this project's machine: 0.40 ms of broker CPU per persistent message confirmed one at a time,
0.10 ms in bursts of 50). kombu's `confirm_publish` waits after every message, so this module
puts the channel in confirm mode itself and counts the acks through py-amqp's channel events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kombu import Connection

from shared.errors import TransientError

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT_SECONDS = 30.0


class PublishFailed(TransientError):
    """RabbitMQ did not confirm every message (refused, unroutable, or the connection failed)."""


@dataclass(frozen=True)
class Outgoing:
    """One AMQP message, ready to publish, persistent.

    Published as given: no content type is added to a message that has none (a message sent on
    again, to be retried or dead-lettered, keeps the properties it came with). A mandatory message
    that no queue takes fails the publish; only a public event may have no subscriber.
    """

    exchange: str
    routing_key: str
    body: bytes
    content_type: str | None = "application/json"
    content_encoding: str | None = "utf-8"
    message_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)
    mandatory: bool = True


@dataclass
class _Channel:
    """A channel in confirm mode and what it has been told so far."""

    connection: Connection
    channel: Any  # kombu's py-amqp channel
    published: int = 0  # delivery tags are numbered from 1 on each confirming channel
    confirmed: int = 0
    failures: list[str] = field(default_factory=list)

    def on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self.confirmed = max(self.confirmed, delivery_tag)

    def on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self.confirmed = max(self.confirmed, delivery_tag)
        self.failures.append(f"RabbitMQ refused message {delivery_tag}")

    def on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        self.failures.append(f"no queue for {exchange or '(default exchange)'} / {routing_key}")


class Publisher:
    """Publishes batches of messages and returns once RabbitMQ has confirmed all of them.

    Safe to share between threads: each thread publishes on a connection of its own, opened on
    first use. A batch interrupted by a lost connection is published again once on a fresh one
    (receivers drop duplicates); a second failure raises PublishFailed.
    """

    def __init__(self, amqp_url: str) -> None:
        self._url = amqp_url
        self._local = threading.local()
        self._lock = threading.Lock()
        self._channels: list[_Channel] = []

    def publish(self, messages: Sequence[Outgoing]) -> None:
        if not messages:
            return
        try:
            self._publish_confirmed(messages)
        except PublishFailed:
            raise
        except Exception as e:
            log.warning("publishing %d message(s) failed (%r); reconnecting once", len(messages), e)
            self._discard()
            try:
                self._publish_confirmed(messages)
            except PublishFailed:
                raise
            except Exception as again:
                self._discard()
                raise PublishFailed(f"could not publish to RabbitMQ: {again!r}") from again

    def close(self) -> None:
        with self._lock:
            channels, self._channels = self._channels, []
        for channel in channels:
            _release(channel.connection)

    def _publish_confirmed(self, messages: Sequence[Outgoing]) -> None:
        channel = self._channel()
        channel.failures.clear()
        for message in messages:
            properties = {**message.properties, "delivery_mode": 2}
            if message.message_id is not None:
                properties["message_id"] = message.message_id
            channel.channel.basic_publish(
                channel.channel.prepare_message(
                    message.body,
                    None,
                    message.content_type,
                    message.content_encoding,
                    dict(message.headers),
                    properties,
                ),
                exchange=message.exchange,
                routing_key=message.routing_key,
                mandatory=message.mandatory,
            )
            channel.published += 1
        _await_confirms(channel)
        if channel.failures:
            raise PublishFailed("; ".join(channel.failures[:5]))

    def _channel(self) -> _Channel:
        channel: _Channel | None = getattr(self._local, "channel", None)
        if channel is None:
            connection = Connection(self._url, heartbeat=0, connect_timeout=10)
            amqp_channel = connection.channel()
            amqp_channel.confirm_select()
            channel = _Channel(connection, amqp_channel)
            amqp_channel.events["basic_ack"].add(channel.on_ack)
            amqp_channel.events["basic_nack"].add(channel.on_nack)
            amqp_channel.events["basic_return"].add(channel.on_return)
            self._local.channel = channel
            with self._lock:
                self._channels.append(channel)
        return channel

    def _discard(self) -> None:
        channel: _Channel | None = getattr(self._local, "channel", None)
        self._local.channel = None
        if channel is not None:
            with self._lock:
                if channel in self._channels:
                    self._channels.remove(channel)
            _release(channel.connection)


def _await_confirms(channel: _Channel) -> None:
    deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS
    while channel.confirmed < channel.published:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PublishFailed(f"RabbitMQ did not confirm within {CONFIRM_TIMEOUT_SECONDS:.0f} s")
        try:
            channel.connection.drain_events(timeout=remaining)
        except TimeoutError:
            continue


def _release(connection: Connection) -> None:
    try:
        connection.release()
    except Exception:  # closing a connection that already failed
        log.debug("closing a publisher connection failed", exc_info=True)
