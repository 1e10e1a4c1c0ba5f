"""Make the three MongoDB members of docker-compose.yml one replica set, and give each Orderflow
worker and the operator a user of its own; run by the one-shot `mongo-init` service in the
Orderflow image, again on every `docker compose up`: what is done already is left as it is.

The root user is the image's (MONGO_INITDB_ROOT_PASSWORD_FILE, created on mongo-1's first start);
every other user is named, and its password given, by the URL the process that uses it connects
with (the secrets ORDERFLOW_MONGO_URL_<WORKER> and, for the CLI, ORDERFLOW_MONGO_URL). A worker may
read and write its own database only; the operator (backup, restore, migrate, reports) all of them.

Usage: python init_replica_set.py [--secrets-dir /run/secrets]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from pymongo import MongoClient
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError
from pymongo.uri_parser import parse_uri

from services.backup import DATABASE_ORDER, suffix_of
from shared.settings import SERVICES, Settings

REPLICA_SET = "rs0"
MEMBERS = ("mongo-1:27017", "mongo-2:27017", "mongo-3:27017")
ROOT_USER = "root"
ROOT_PASSWORD_SECRET = "mongo_root_password"
OPERATOR_SECRET = "ORDERFLOW_MONGO_URL"
# MongoDB's error codes: the set is not initiated yet; wrong user name or password.
NOT_YET_INITIALIZED = 94
AUTHENTICATION_FAILED = 18
# How long the members may take to start (mongo-1 first creates the root user on a local-only
# mongod, then restarts) and to elect a primary.
DEADLINE_SECONDS = 180.0

T = TypeVar("T")


def worker_secret(service: str) -> str:
    return f"ORDERFLOW_MONGO_URL_{service.upper()}"


def databases_of(settings: Settings) -> dict[str, list[str]]:
    """The databases each user reads and writes, by the secret holding its URL."""
    grants = {worker_secret(service): [settings.database_name(service)] for service in SERVICES}
    # The simulated payment providers keep their ledger in a database of their own, inside the
    # payment worker's process (services/payment/bootstrap.py).
    grants[worker_secret("payment")].append(f"{settings.db_prefix}_simulated_gateway")
    grants[OPERATOR_SECRET] = [f"{settings.db_prefix}_{suffix_of(name)}" for name in DATABASE_ORDER]
    return grants


def credentials(url: str) -> tuple[str, str]:
    """The user name and password a MongoDB URL logs in with."""
    parsed = parse_uri(url)
    if not parsed["username"] or not parsed["password"]:
        raise ValueError("the URL names no user and password")
    return parsed["username"], parsed["password"]


def replica_set_config() -> dict[str, Any]:
    return {"_id": REPLICA_SET, "members": [{"_id": i, "host": host} for i, host in enumerate(MEMBERS)]}


def until(deadline: float, what: str, attempt: Callable[[], T]) -> T:
    """`attempt()`'s result, tried again while the store is not reachable yet, until `deadline`."""
    while True:
        try:
            return attempt()
        except ConnectionFailure as e:
            if time.monotonic() > deadline:
                raise SystemExit(f"mongo-init: {what}: gave up: {e}") from e
            time.sleep(2)


def initiate(root_password: str, deadline: float) -> None:
    """Initiate the replica set from mongo-1, unless it is initiated already."""
    client: MongoClient[dict[str, Any]] = MongoClient(
        f"mongodb://{ROOT_USER}:{quote(root_password, safe='')}@{MEMBERS[0]}/?authSource=admin",
        directConnection=True,
        serverSelectionTimeoutMS=5000,
    )
    try:

        def status() -> bool:
            try:
                client.admin.command("replSetGetStatus")
                return True
            except OperationFailure as e:
                if e.code == NOT_YET_INITIALIZED:
                    return False
                raise

        if until(deadline, f"reach {MEMBERS[0]}", status):
            print(f"mongo-init: replica set {REPLICA_SET} is initiated already")
            return
        client.admin.command("replSetInitiate", replica_set_config())
        print(f"mongo-init: initiated replica set {REPLICA_SET}: {', '.join(MEMBERS)}")
    finally:
        client.close()


def upsert_user(client: MongoClient[dict[str, Any]], user: str, password: str, databases: list[str]) -> str:
    """Create `user` with readWrite on `databases` and nothing else, or set its password and roles."""
    roles = [{"role": "readWrite", "db": database} for database in databases]
    majority = {"w": "majority"}
    if client.admin.command("usersInfo", user)["users"]:
        client.admin.command("updateUser", user, pwd=password, roles=roles, writeConcern=majority)
        return "updated"
    client.admin.command("createUser", user, pwd=password, roles=roles, writeConcern=majority)
    return "created"


def create_users(root_password: str, secrets: Path, settings: Settings, deadline: float) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(
        f"mongodb://{ROOT_USER}:{quote(root_password, safe='')}@{','.join(MEMBERS)}/"
        f"?replicaSet={REPLICA_SET}&authSource=admin",
        serverSelectionTimeoutMS=5000,
    )
    try:
        # The primary answers once elected; until then server selection times out.
        until(deadline, "elect a primary", lambda: client.admin.command("ping"))
        for secret, databases in databases_of(settings).items():
            user, password = credentials(read_secret(secrets, secret))
            done = until(
                deadline, f"create user {user}", partial(upsert_user, client, user, password, databases)
            )
            print(f"mongo-init: user {user} {done}: readWrite on {', '.join(databases)}")
    finally:
        client.close()


def read_secret(secrets: Path, name: str) -> str:
    path = secrets / name
    try:
        return path.read_text().strip()
    except OSError as e:
        raise SystemExit(f"mongo-init: {path}: {e.strerror or e} (run scripts/compose-secrets.sh)") from e


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secrets-dir", type=Path, default=Path("/run/secrets"))
    args = parser.parse_args(argv)
    deadline = time.monotonic() + DEADLINE_SECONDS
    root_password = read_secret(args.secrets_dir, ROOT_PASSWORD_SECRET)
    try:
        initiate(root_password, deadline)
        create_users(root_password, args.secrets_dir, Settings(), deadline)
    except OperationFailure as e:
        if e.code == AUTHENTICATION_FAILED:
            raise SystemExit(
                "mongo-init: the root password is not the one mongo-1 was first started with: its "
                "volume keeps the old one (docker compose down --volumes starts afresh)"
            ) from e
        raise SystemExit(f"mongo-init: {e}") from e
    except PyMongoError as e:
        raise SystemExit(f"mongo-init: {e}") from e
    return 0


if __name__ == "__main__":
    sys.exit(main())
