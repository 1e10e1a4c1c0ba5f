"""`orderflow broker setup`: load Orderflow's definitions (topology, role users, permissions) into a
broker, giving each role user its password; `orderflow topology definitions` prints them.

The passwords come from the URLs the roles connect with: files named as the variables
(ORDERFLOW_AMQP_URL_ORDER, ...) in a secrets directory (containers), or an env file, which is
written with new random passwords for the roles it lacks (a machine of one's own: `make services`).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from shared.errors import UsageError
from shared.messaging import roles
from shared.messaging.management import Management
from shared.messaging.transport import topology_of
from shared.settings import ROLES, Settings, credentials_of, read_variables


def variable(role: str) -> str:
    return f"ORDERFLOW_AMQP_URL_{role.upper()}"


def vhost_of(settings: Settings) -> str:
    """The vhost of the administrative URL: the one Orderflow's definitions are loaded into."""
    return unquote(urlsplit(settings.amqp_urls()[0]).path.lstrip("/")) or "/"


def definitions(settings: Settings, source: Path | None = None) -> dict[str, Any]:
    """Orderflow's definitions for the vhost of `settings`: read from `source` (a definitions file,
    its vhost replaced), or made from the settings (their partitions, delays and queue type)."""
    vhost = vhost_of(settings)
    if source is None:
        return roles.definitions(topology_of(settings), vhost)
    loaded: dict[str, Any] = json.loads(source.read_text())
    for section in ("permissions", "topic_permissions", "exchanges", "queues", "bindings"):
        for item in loaded.get(section, []):
            item["vhost"] = vhost
    loaded["vhosts"] = [{"name": vhost}]
    return loaded


def print_definitions(settings: Settings) -> int:
    print(json.dumps(definitions(settings), indent=2))
    return 0


def setup(
    settings: Settings,
    management_url: str | None,
    source: Path | None,
    secrets_dir: Path | None,
    env_file: Path | None,
) -> int:
    """Load the definitions with a password for every role user; print where the URLs are."""
    if (secrets_dir is None) == (env_file is None):
        raise UsageError("give either --secrets-dir (each role's URL in a file) or --env-file")
    loaded = definitions(settings, source)
    if secrets_dir is not None:
        urls = {role: _read_secret(secrets_dir, role) for role in ROLES}
    else:
        assert env_file is not None
        urls = _with_new_passwords(settings, read_variables(env_file))
    credentials = {role: credentials_of(url) for role, url in urls.items()}
    loaded["users"] = [
        {"name": user, "password": password, "tags": []} for user, password in credentials.values()
    ]
    renamed = {roles.user_of(role): credentials[role][0] for role in ROLES}
    for section in ("permissions", "topic_permissions"):
        for item in loaded.get(section, []):
            item["user"] = renamed.get(item["user"], item["user"])
    management = Management(management_url) if management_url else Management.beside(settings.amqp_urls()[0])
    management.load_definitions(loaded)
    if env_file is not None:
        env_file.parent.mkdir(parents=True, exist_ok=True)
        # Readable by its owner alone from the first byte: it holds every role's password.
        descriptor = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        env_file.chmod(0o600)  # one that was there before keeps its own mode otherwise
        with os.fdopen(descriptor, "w") as out:
            out.write("".join(f"{variable(role)}={urls[role]}\n" for role in ROLES))
        print(f"loaded Orderflow's definitions into vhost {vhost_of(settings)}; role URLs in {env_file}")
    else:
        print(f"loaded Orderflow's definitions into vhost {vhost_of(settings)}; role users' passwords set")
    return 0


def _read_secret(directory: Path, role: str) -> str:
    path = directory / variable(role)
    try:
        return path.read_text().strip()
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror or e}") from e


def _with_new_passwords(settings: Settings, known: dict[str, str]) -> dict[str, str]:
    """Every role's URL: as the env file has it, else a new user of the role's name with a random
    password on the nodes and vhost of the administrative URL."""
    urls = {}
    for role in ROLES:
        if variable(role) in known:
            urls[role] = known[variable(role)]
            continue
        password = secrets.token_urlsafe(24)
        urls[role] = ",".join(_as_user(url, roles.user_of(role), password) for url in settings.amqp_urls())
    return urls


def _as_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"))
