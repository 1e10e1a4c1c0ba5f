from __future__ import annotations

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from shared.runtime import WorkerApp, serve
from shared.settings import Settings
from tests.support import consumer_count, isolated_settings, wait_for


@pytest.fixture
def settings() -> Iterator[Settings]:
    with isolated_settings() as settings:
        yield settings


@contextmanager
def running(service: str, settings: Settings, queues: list[str], threads: int = 2) -> Iterator[WorkerApp]:
    """One worker, in this process, against the real broker and store, until the block ends."""
    app = importlib.import_module(f"services.{service}.bootstrap").bootstrap(settings)
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(app, threads, stop), daemon=True)
    thread.start()
    for queue in queues:
        wait_for(
            lambda q=queue: consumer_count(settings.amqp_url, q), timeout=30, what=f"a consumer on {queue}"
        )
    try:
        yield app
    finally:
        stop.set()
        thread.join(60)
