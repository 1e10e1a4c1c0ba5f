"""The nodes of a RabbitMQ cluster, as kombu reaches them: `url1;url2;url3`, tried in turn."""

from __future__ import annotations

from kombu import Connection


def connect_to_a_node(connection: Connection) -> Connection:
    """Connect to the first of the connection's nodes that answers, each tried once, without pausing.

    kombu's own connect (on a first `channel()`) tries two nodes at most: a fresh connection, as every
    reconnection makes, would never reach a third. Raises the last node's error if none answers.
    """
    connection.ensure_connection(max_retries=max(len(connection.alt), 1) - 1, reraise_as_library_errors=False)
    return connection
