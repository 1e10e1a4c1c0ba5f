"""MongoDB access: one client per process, one database per worker."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from pymongo import MongoClient, UpdateOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from shared.settings import Settings

DEFAULT_TIMEOUT_MS = 5_000
# An operation the store does not answer within this fails (and is retried) rather than hanging.
OPERATION_TIMEOUT_MS = 60_000
# The server error code of an insert whose `_id` (or other unique key) is taken.
DUPLICATE_KEY = 11000


def connect(settings: Settings, service: str | None = None) -> MongoClient:
    """A client that connects lazily, as `service`'s own store user if it has one (else with the
    administrative URL, as the CLI does); operations fail after a few seconds if the store is down."""
    return MongoClient(
        settings.mongo_url_of(service),
        tz_aware=True,
        appname="orderflow",
        serverSelectionTimeoutMS=DEFAULT_TIMEOUT_MS,
        connectTimeoutMS=DEFAULT_TIMEOUT_MS,
        socketTimeoutMS=OPERATION_TIMEOUT_MS,
    )


def database(client: MongoClient, settings: Settings, service: str) -> Database:
    """The database `service` owns; no worker reads another's."""
    return client[settings.database_name(service)]


def claim_id(entity_id: str, version: int) -> str:
    """The id of the claim that moves an entity (an order, a support case) to `version`: inserted
    under it, the transition happens once, whoever races for it."""
    return f"{entity_id}:{version}"


def write_over(collection: Collection, states: Sequence[tuple[dict[str, Any], int]]) -> None:
    """Write each state over its document still at the previous version, in one round trip: only
    the winner of the transition's claim writes it, and writing the same state twice changes
    nothing."""
    if states:
        collection.bulk_write(
            [
                UpdateOne(
                    {"_id": state["_id"], "version": previous},
                    {"$set": {key: value for key, value in state.items() if key != "_id"}},
                )
                for state, previous in states
            ],
            ordered=False,
        )


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


def find_by_ids(collection: Collection, ids: Iterable[Any]) -> list[dict[str, Any]]:
    """The documents under these `_id`s, in one round trip: the one read the hot path makes (on
    the FerretDB stand-in, only `_id` lookups use an index)."""
    wanted = sorted(set(ids))
    return list(collection.find({"_id": {"$in": wanted}})) if wanted else []


T = TypeVar("T")


class RecentCopies(Generic[T]):
    """What this process read or wrote last, by key, kept in memory in front of a repository.

    Callers get copies, so changing what they got changes nothing here until they `keep` it.
    With a `capacity`, the least recently kept go first.
    """

    def __init__(self, key: Callable[[T], str], copy: Callable[[T], T], capacity: int | None = None) -> None:
        self._key = key
        self._copy = copy
        self._capacity = capacity
        self._items: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: Iterable[str], load: Callable[[set[str]], dict[str, T]]) -> dict[str, T]:
        """Copies of the items under `keys`; those not kept here come from `load` (and are kept)."""
        wanted = set(keys)
        with self._lock:
            found = {key: self._copy(self._items[key]) for key in wanted if key in self._items}
        missing = wanted - found.keys()
        if missing:
            loaded = load(missing)
            self.keep(loaded.values())
            found.update(loaded)
        return found

    def keep(self, items: Iterable[T]) -> None:
        with self._lock:
            for item in items:
                key = self._key(item)
                self._items[key] = self._copy(item)
                self._items.move_to_end(key)
            while self._capacity is not None and len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def forget(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
