"""How busy a queue is, as RabbitMQ says now: for telling a step queued behind work from a lost one."""

from __future__ import annotations

import threading

from kombu import Connection

from shared.messaging.ports import Backlog
from shared.messaging.tls import AmqpTls


class RabbitQueueProbe:
    """Reads backlogs with passive declarations; each thread asks on a connection of its own."""

    def __init__(self, amqp_url: str, tls: AmqpTls | None = None) -> None:
        self._url = amqp_url
        self._tls = tls or AmqpTls()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[Connection] = []

    def backlog(self, queue: str) -> Backlog:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._tls.connection(self._url, heartbeat=0)
            with self._lock:
                self._connections.append(connection)
        try:
            _, ready, consumers = connection.default_channel.queue_declare(queue=queue, passive=True)
        except Exception:
            self._local.connection = None
            connection.release()
            raise
        return Backlog(ready=ready, consumers=consumers)

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.release()
