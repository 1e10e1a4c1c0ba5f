"""MongoDB access: one client per process, one database per worker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from shared.settings import Settings

DEFAULT_TIMEOUT_MS = 5_000
# An operation the store does not answer within this fails (and is retried) rather than hanging.
OPERATION_TIMEOUT_MS = 60_000
# The server error code of an insert whose `_id` (or other unique key) is taken.
DUPLICATE_KEY = 11000


def connect(settings: Settings) -> MongoClient:
    """A client that connects lazily; operations fail after a few seconds if the store is down."""
    return MongoClient(
        settings.mongo_url,
        tz_aware=True,
        appname="orderflow",
        serverSelectionTimeoutMS=DEFAULT_TIMEOUT_MS,
        connectTimeoutMS=DEFAULT_TIMEOUT_MS,
        socketTimeoutMS=OPERATION_TIMEOUT_MS,
    )


def database(client: MongoClient, settings: Settings, service: str) -> Database:
    """The database `service` owns; no worker reads another's."""
    return client[settings.database_name(service)]


def insert_new(collection: Collection, documents: Sequence[dict[str, Any]]) -> set[Any]:
    """Insert documents under ids not taken yet, in one round trip; returns the ids that were taken.

    An insert under a unique `_id` is atomic on MongoDB and on FerretDB: it is how handlers claim
    work, and how a redelivered message finds its work claimed already.
    """
    if not documents:
        return set()
    try:
        collection.insert_many(list(documents), ordered=False)
    except BulkWriteError as e:
        problems = e.details.get("writeErrors", [])
        if any(problem["code"] != DUPLICATE_KEY for problem in problems):
            raise
        return {documents[problem["index"]]["_id"] for problem in problems}
    return set()
