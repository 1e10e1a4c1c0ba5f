"""The checks behind /readyz, on the real broker and store: one kept connection each, and a service
that does not answer is reported within the checks' timeout, not waited for."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

import pytest
from pymongo import MongoClient

from shared import sandbox, store
from shared.health import CHECK_TIMEOUT_SECONDS, DependencyChecks
from shared.settings import Settings
from tests.support import wait_for


def broker_connections(vhost: str) -> set[str]:
    """The client ports of the connections RabbitMQ has open on `vhost`."""
    listing = sandbox.rabbitmqctl("list_connections", "-q", "vhost", "peer_port")
    rows = (line.split("\t") for line in listing.splitlines() if "\t" in line)
    return {port for name, port in rows if name == vhost}


def test_every_check_reuses_one_broker_connection(settings: Settings) -> None:
    vhost = unquote(urlsplit(settings.amqp_url_of("reporting").split(";")[0]).path.lstrip("/"))
    checks = DependencyChecks(settings.amqp_url_of("reporting"), lambda: store.connect(settings, "reporting"))
    try:
        for _ in range(3):
            checks.broker()
            checks.store()
        opened = wait_for(lambda: broker_connections(vhost), timeout=10, what="the check's connection")
        for _ in range(5):
            checks.broker()
            checks.store()
        assert broker_connections(vhost) == opened and len(opened) == 1
    finally:
        checks.close()
    wait_for(lambda: not broker_connections(vhost), timeout=10, what="the connection to close")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections (the kernel completes them) and never says a word."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        yield listener.getsockname()[1]


def test_a_service_that_does_not_answer_fails_its_check_within_the_timeout(silent_port: int) -> None:
    checks = DependencyChecks(
        f"amqp://guest:guest@127.0.0.1:{silent_port}/%2F",
        lambda: MongoClient(f"mongodb://127.0.0.1:{silent_port}/", serverSelectionTimeoutMS=60_000),
    )
    try:
        for check in (checks.broker, checks.store):
            began = time.monotonic()
            with pytest.raises(Exception):  # noqa: B017 - whatever the client raises: it did not answer
                check()
            assert time.monotonic() - began < CHECK_TIMEOUT_SECONDS + 1.5, check.__name__
    finally:
        checks.close()
