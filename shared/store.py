"""MongoDB access: one client per process, one database per worker."""

from __future__ import annotations

from pymongo import MongoClient
from pymongo.database import Database

from shared.settings import Settings

DEFAULT_TIMEOUT_MS = 5_000


def connect(settings: Settings) -> MongoClient:
    """A client that connects lazily; operations fail after a few seconds if the store is down."""
    return MongoClient(
        settings.mongo_url,
        tz_aware=True,
        appname="orderflow",
        serverSelectionTimeoutMS=DEFAULT_TIMEOUT_MS,
        connectTimeoutMS=DEFAULT_TIMEOUT_MS,
    )


def database(client: MongoClient, settings: Settings, service: str) -> Database:
    """The database `service` owns; no worker reads another's."""
    return client[settings.database_name(service)]
