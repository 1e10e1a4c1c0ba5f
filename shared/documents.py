"""Schema versions of stored documents: each collection's current version and how older ones are upgraded.

A document carries its version in `schema`; one without it was written before documents carried
one (version 1). A repository reads every document through its collection's `DocumentSchema.current`
(migrated lazily: handlers only ever see the current shape) and writes the current version. `migrate`
rewrites the older documents of a collection in place (`orderflow migrate`), safe while workers run:
an upgrade only adds what the older shape meant, and each write is guarded by the document's
version as read, so a document a worker wrote meanwhile (in the current shape) is left as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo import UpdateOne
from pymongo.collection import Collection

from shared.errors import PermanentError

SCHEMA_FIELD = "schema"
Document = dict[str, Any]
Upgrade = Callable[[Document], Document]

# How many documents one write of `migrate` carries, and how often it reads again what workers
# wrote meanwhile before it leaves those to the workers (who write the current version anyway).
MIGRATE_BATCH = 500
MIGRATE_PASSES = 3


class NewerDocument(PermanentError):
    """A document written by a newer release than this worker: upgrade the worker."""


@dataclass(frozen=True)
class DocumentSchema:
    """The current version of one collection's documents, and the upgrade from each older one.

    `guard` names the fields whose values, as read, a migration's write requires (the version a
    worker guards its own writes with); `_id` and `schema` are always required.
    """

    service: str
    collection: str
    version: int
    upgrades: Mapping[int, Upgrade] = field(default_factory=dict)
    guard: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        missing = [n for n in range(1, self.version) if n not in self.upgrades]
        assert not missing, f"{self.collection}: no upgrade from version {missing}"

    def current(self, document: Document) -> Document:
        """`document` in the current shape (the same object if it is current)."""
        version = document.get(SCHEMA_FIELD, 1)
        if version == self.version:
            return document
        if version > self.version:
            raise NewerDocument(
                f"{self.collection} {document.get('_id')!r} is of schema {version}; this worker reads up "
                f"to {self.version}: upgrade it"
            )
        while version < self.version:
            document = self.upgrades[version](document)
            version += 1
        return {**document, SCHEMA_FIELD: self.version}

    def stamp(self, document: Document) -> Document:
        """A document this release writes, marked with the current version."""
        return {**document, SCHEMA_FIELD: self.version}


@dataclass
class Migration:
    """What `migrate` found in one collection."""

    service: str
    collection: str
    outdated: int = 0  # documents of an older version when it began
    upgraded: int = 0  # rewritten by it
    by_workers: int = 0  # written meanwhile by a worker (in the current version) or gone


def migrate(collection: Collection, schema: DocumentSchema, *, dry_run: bool = False) -> Migration:
    """Rewrite every document of `collection` older than `schema.version` in the current shape.

    Each write changes only what the upgrade added or changed, on the document still as it was read
    (`_id`, `schema` and `schema.guard`); one a worker wrote meanwhile is read again, up to
    MIGRATE_PASSES times. A scan of the collection: an operator's act, never the hot path.
    """
    result = Migration(schema.service, schema.collection)
    older = {"$or": [{SCHEMA_FIELD: {"$exists": False}}, {SCHEMA_FIELD: {"$lt": schema.version}}]}
    outdated: set[Any] = set()
    upgraded = 0
    for _ in range(MIGRATE_PASSES):
        documents = list(collection.find(older))
        # Counted once each, however often a worker wrote one again in the older shape.
        outdated |= {document["_id"] for document in documents}
        if dry_run or not documents:
            break
        for start in range(0, len(documents), MIGRATE_BATCH):
            writes = [
                _upgrade_write(schema, document) for document in documents[start : start + MIGRATE_BATCH]
            ]
            upgraded += collection.bulk_write(writes, ordered=False).matched_count
    result.outdated = len(outdated)
    result.upgraded = min(upgraded, result.outdated)
    result.by_workers = 0 if dry_run else result.outdated - result.upgraded
    return result


def _upgrade_write(schema: DocumentSchema, document: Document) -> UpdateOne:
    upgraded = schema.current(document)
    changed = {key: value for key, value in upgraded.items() if key not in document or document[key] != value}
    removed = {key: "" for key in document if key not in upgraded}
    as_read = {
        "_id": document["_id"],
        SCHEMA_FIELD: document.get(SCHEMA_FIELD, {"$exists": False}),
        **{name: document.get(name) for name in schema.guard},
    }
    return UpdateOne(as_read, {"$set": changed, **({"$unset": removed} if removed else {})})
