"""A throwaway RabbitMQ vhost and database prefix, for benchmarks and tests on a local broker.

Creating a vhost takes RabbitMQ's own `rabbitmqctl` (so: the broker on this machine, and the
rights to run it); everything inside the sandbox is removed when it ends.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pymongo import MongoClient

from shared.settings import Settings

RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


def rabbitmqctl(*args: str, node: str | None = None) -> str:
    """rabbitmqctl's output, against `node` (the default node on this machine if None)."""
    target = [] if node is None else ["-n", node]
    return subprocess.run(
        [RABBITMQCTL, *target, *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


@contextmanager
def sandbox(
    name: str, base: Settings | None = None, *, node: str | None = None, **overrides: Any
) -> Iterator[Settings]:
    """Settings with a vhost and a database prefix of their own, both removed afterwards; `node` is
    the RabbitMQ node of `base`'s broker, if it is not this machine's default one."""
    base = base or Settings()
    tag = uuid.uuid4().hex[:10]
    vhost = f"{name}-{tag}"
    prefix = f"{name.replace('-', '_')}_{tag}"
    parts = urlsplit(base.amqp_url)
    user = unquote(parts.username or "guest")
    rabbitmqctl("add_vhost", vhost, node=node)
    rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*", node=node)
    amqp_url = urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
    settings = Settings(**{**base.model_dump(), "amqp_url": amqp_url, "db_prefix": prefix, **overrides})
    try:
        yield settings
    finally:
        client: MongoClient = MongoClient(settings.mongo_url)
        try:
            for database in client.list_database_names():
                if database.startswith(f"{prefix}_"):
                    client.drop_database(database)
        finally:
            client.close()
            rabbitmqctl("delete_vhost", vhost, node=node)


def environment(settings: Settings) -> dict[str, str]:
    """The ORDERFLOW_* variables that give a worker process these settings."""
    return {
        f"ORDERFLOW_{name.upper()}": str(value)
        for name, value in settings.model_dump().items()
        if value is not None
    }
