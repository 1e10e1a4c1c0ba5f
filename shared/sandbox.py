"""A throwaway RabbitMQ vhost and database prefix, for benchmarks and tests on a local broker.

On the machine's broker (`make services`), a sandbox is set up as production is: through the
management API, Orderflow's definitions (every exchange and queue) and each role user's permissions
on the vhost, and the roles' URLs (from `.services/rabbitmq-users.env`) pointed at it. On a node of
a test's own, which has only its administrator, it takes `rabbitmqctl` and the administrative URL.
Everything inside the sandbox is removed when it ends.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import SecretStr
from pymongo import MongoClient

from shared.messaging import roles
from shared.messaging.management import Management
from shared.messaging.transport import topology_of
from shared.settings import ROLES, Settings, credentials_of, read_variables, split_urls

RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
# Where `make services` writes the URL of each role's broker user on this machine.
LOCAL_USERS_ENV = Path(__file__).resolve().parents[1] / ".services" / "rabbitmq-users.env"


def local_role_urls(env_file: Path = LOCAL_USERS_ENV) -> dict[str, str]:
    """ORDERFLOW_AMQP_URL_<ROLE> of each role user `make services` (or `scripts/cluster.sh`, in
    its own `env_file`) created here, if it did."""
    return read_variables(env_file)


def rabbitmqctl(*args: str, node: str | None = None) -> str:
    """rabbitmqctl's output, against `node` (the default node on this machine if None)."""
    target = [] if node is None else ["-n", node]
    return subprocess.run(
        [RABBITMQCTL, *target, *args], check=True, capture_output=True, text=True, timeout=60
    ).stdout


@contextmanager
def sandbox(
    name: str,
    base: Settings | None = None,
    *,
    node: str | None = None,
    declared: bool = True,
    management_url: str | None = None,
    **overrides: Any,
) -> Iterator[Settings]:
    """Settings with a vhost and a database prefix of their own, both removed afterwards; `node` is
    the RabbitMQ node of `base`'s broker, if it is not this machine's default one; `declared`: with
    Orderflow's exchanges and queues declared on the vhost, as the definitions file declares them;
    `management_url`: the broker's management API, if not on its usual port beside the first node."""
    base = base or Settings()
    tag = uuid.uuid4().hex[:10]
    vhost = f"{name}-{tag}"
    prefix = f"{name.replace('-', '_')}_{tag}"
    parts = urlsplit(base.amqp_url)
    user = unquote(parts.username or "guest")
    in_vhost: dict[str, str | None] = {"amqp_url": _in_vhost(base.amqp_url, vhost)}
    for role in ROLES:
        url = _own(base, role)
        # A node of a test's own has no role users: there, every role is the administrator.
        in_vhost[f"amqp_url_{role}"] = (
            None if url is None or node else _in_vhost(url.get_secret_value(), vhost)
        )
    fields = {**_values(base), **in_vhost, "db_prefix": prefix, **overrides}
    settings = Settings(**fields)
    management: Management | None = None
    if management_url:
        management = Management(management_url)
    elif not node:
        management = Management.beside(settings.amqp_urls()[0])
    if management is None:
        rabbitmqctl("add_vhost", vhost, node=node)
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*", node=node)
    else:
        definitions = roles.definitions(topology_of(settings), vhost)
        if not declared:  # a vhost as a broker is before Orderflow's topology is declared on it
            for section in ("exchanges", "queues", "bindings"):
                definitions[section] = []
        del definitions["users"]  # they exist, with their passwords; only their permissions are new
        # The role users the settings connect as (those with URLs of their own), and the administrator.
        users = {
            role: credentials_of(url.get_secret_value())[0] for role in ROLES if (url := _own(settings, role))
        }
        definitions |= roles.permission_definitions(vhost, users)
        definitions["permissions"].append(
            {"user": user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
        )
        management.load_definitions(definitions)
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
            if management is None:
                rabbitmqctl("delete_vhost", vhost, node=node)
            else:
                management.delete_vhost(vhost)


def _in_vhost(urls: str, vhost: str) -> str:
    """`urls` (one or several nodes) on `vhost`, separated as kombu takes a list of nodes to fail over."""
    return ";".join(
        urlunsplit(urlsplit(url)._replace(path="/" + quote(vhost, safe=""))) for url in split_urls(urls)
    )


def _own(settings: Settings, role: str) -> SecretStr | None:
    """The URL of `role`'s own broker user, if it has one."""
    url: SecretStr | None = getattr(settings, f"amqp_url_{role}")
    return url


def _values(settings: Settings) -> dict[str, Any]:
    """The settings' values as given, secrets revealed."""
    return {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in settings.model_dump().items()
    }


def environment(settings: Settings) -> dict[str, str]:
    """The ORDERFLOW_* variables that give a worker process these settings, whatever it inherits:
    a setting that is unset is given empty, which counts as unset."""
    return {
        f"ORDERFLOW_{name.upper()}": "" if value is None else str(value)
        for name, value in _values(settings).items()
    }
