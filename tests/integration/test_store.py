"""The store every worker runs on: lookups by `_id` are index-backed, so their cost stays flat.

On FerretDB's SQLite backend this holds only for the build `make services` makes, with
scripts/ferretdb/sqlite-backend.patch applied; on MongoDB it always holds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient, UpdateOne
from pymongo.database import Database

from shared import store
from shared.settings import Settings

DOCUMENTS = 20_000


@pytest.fixture(scope="module")
def big_collection() -> Iterator[tuple[Database, str]]:
    from tests.support import isolated_settings

    with isolated_settings() as settings:
        client: MongoClient = store.connect(settings)
        db = store.database(client, settings, "order")
        documents = db["big"]
        for start in range(0, DOCUMENTS, 1000):
            documents.insert_many(
                [
                    {"_id": f"order-{n:06d}", "status": "pending", "version": 3, "note": "x" * 200}
                    for n in range(start, start + 1000)
                ]
            )
        yield db, "big"
        client.close()


def _plan(db: Database, collection: str, query: dict[str, Any]) -> str:
    """What the store says it will do for `find(query)`, as one string."""
    explained = db.command("explain", {"find": collection, "filter": query})
    return repr(explained.get("queryPlanner", explained))


def _index_backed(plan: str) -> bool:
    # FerretDB on SQLite shows SQLite's EXPLAIN QUERY PLAN; MongoDB shows its plan stages.
    return any(marker in plan for marker in ("USING INDEX", "IDHACK", "IXSCAN", "EXPRESS"))


@pytest.mark.parametrize(
    "query",
    [
        {"_id": "order-012345"},
        {"_id": "order-012345", "version": 3},  # a guarded write's filter
        {"_id": {"$in": ["order-000001", "order-019999"]}},  # a batch's lookup
    ],
    ids=["by-id", "guarded", "in-list"],
)
def test_lookups_by_id_use_the_id_index(big_collection: tuple[Database, str], query: dict) -> None:
    db, collection = big_collection
    plan = _plan(db, collection, query)
    assert _index_backed(plan), f"{query} is not index-backed: {plan}"


def test_a_query_on_another_field_is_not_mistaken_for_an_id_lookup(
    big_collection: tuple[Database, str],
) -> None:
    db, collection = big_collection
    assert not _index_backed(_plan(db, collection, {"status": "pending"}))


def test_guarded_writes_and_lookups_find_exactly_their_documents(
    big_collection: tuple[Database, str],
) -> None:
    db, collection = big_collection
    documents = db[collection]
    assert documents.update_one({"_id": "order-000007", "version": 2}, {"$set": {"x": 1}}).matched_count == 0
    assert documents.update_one({"_id": "order-000007", "version": 3}, {"$set": {"x": 1}}).matched_count == 1
    found = documents.find({"_id": {"$in": ["order-000007", "order-000008", "nope"]}, "x": 1})
    assert [document["_id"] for document in found] == ["order-000007"]


def test_cost_of_a_lookup_does_not_grow_with_the_collection(
    big_collection: tuple[Database, str], figure, settings: Settings
) -> None:
    db, collection = big_collection
    small = store.database(store.connect(settings), settings, "order")["small"]
    small.insert_many([{"_id": f"order-{n:06d}", "note": "x" * 200} for n in range(10)])

    def per_lookup(documents: Any, ids: list[str]) -> float:
        started = time.perf_counter()
        for document_id in ids:
            assert documents.find_one({"_id": document_id}) is not None
        return (time.perf_counter() - started) / len(ids)

    ids = [f"order-{n * 97 % DOCUMENTS:06d}" for n in range(200)]
    large_cost = per_lookup(db[collection], ids)
    small_cost = per_lookup(small, [f"order-{n % 10:06d}" for n in range(200)])
    figure(
        f"store: find by _id {small_cost * 1000:.2f} ms on 10 documents, "
        f"{large_cost * 1000:.2f} ms on {DOCUMENTS:,}"
    )
    # A scan of 20,000 documents costs hundreds of times one index probe; a generous bound keeps
    # this test about the shape of the cost, not the speed of the machine.
    assert large_cost < small_cost * 5 + 0.002


def test_a_bulk_write_of_many_updates_completes(big_collection: tuple[Database, str]) -> None:
    """A command of more updates than the store has pooled connections (FerretDB: 100) finishes."""
    db, collection = big_collection
    ids = [f"order-{n:06d}" for n in range(150)]
    # A store that hangs fails this test in 30 s instead of stalling the suite.
    with MongoClient(Settings().mongo_url, socketTimeoutMS=30_000) as client:
        documents = client[db.name][collection]
        result = documents.bulk_write(
            [UpdateOne({"_id": document_id, "version": 3}, {"$set": {"bulk": True}}) for document_id in ids],
            ordered=False,
        )
        assert result.matched_count == len(ids)
        assert documents.count_documents({"_id": {"$in": ids}, "bulk": True}) == len(ids)
