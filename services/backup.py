"""`orderflow backup DIR`, `orderflow backup verify DIR`, `orderflow restore DIR`: every worker's
database as BSON files (as mongodump writes them: each document's own length-prefixed bytes, one after
another) and a manifest of counts, checksums and indexes.

Only standard commands (find, insert_many, list_collections, list_indexes, create_index), so a backup
of FerretDB restores onto MongoDB and back. The backup is not a snapshot: it reads the order worker's
database first, claims before orders, and every other database after it, so each holds at least what
the orders rely on (docs/operations.md).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import bson
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.database import Database

from shared import store
from shared.errors import CommandError, UsageError
from shared.settings import DATABASES, Settings

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# The databases in the order they are read: the order worker's first (its decisions), then those
# that carry them out and the provider behind payment, then the read models of its events.
DATABASE_ORDER = ("order", "inventory", "payment", "simulated_gateway", "notification", "reporting")
# Within a database, claims before what they decide: a state restored a step ahead of its claim
# is taken as it is, whereas a claim ahead of its order would stop a sweep from moving it.
COLLECTIONS_FIRST = ("order_transitions", "orders", "reservations", "stock_returns", "payments")
# Documents per insert_many when restoring.
INSERT_CHUNK = 1000
# How often the backup reads everything again when orders moved while it read.
BACKUP_ATTEMPTS = 3
RAW = CodecOptions(document_class=RawBSONDocument, tz_aware=True)
# Left in the order database while a restore runs: a re-run of the same backup carries on.
RESTORE_MARKER = "orderflow_restore"


def suffix_of(name: str) -> str:
    """The database `name` (a worker, or the simulated gateway) is `<prefix>_<suffix>` of."""
    return DATABASES.get(name, name)


# The pure part: files, manifest, checks ----------------------------------------------------------


@dataclass
class CollectionEntry:
    documents: int
    sha256: str
    indexes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Manifest:
    prefix: str
    created_at: str
    databases: dict[str, dict[str, CollectionEntry]]  # database suffix -> collection -> entry
    orders_moved: list[str] = field(default_factory=list)
    format_version: int = FORMAT_VERSION

    def as_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "prefix": self.prefix,
            "created_at": self.created_at,
            "orders_moved_during_backup": self.orders_moved,
            "databases": {
                name: {
                    collection: {"documents": e.documents, "sha256": e.sha256, "indexes": e.indexes}
                    for collection, e in collections.items()
                }
                for name, collections in self.databases.items()
            },
        }

    @property
    def backup_id(self) -> str:
        """What tells this backup from another: its manifest's checksum."""
        return hashlib.sha256(json.dumps(self.as_json(), sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            raise CommandError(f"not a backup manifest of format {FORMAT_VERSION}")
        try:
            return cls(
                prefix=data["prefix"],
                created_at=data["created_at"],
                orders_moved=list(data.get("orders_moved_during_backup", [])),
                databases={
                    name: {
                        collection: CollectionEntry(e["documents"], e["sha256"], list(e["indexes"]))
                        for collection, e in collections.items()
                    }
                    for name, collections in data["databases"].items()
                },
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise CommandError(f"the manifest is incomplete ({type(e).__name__}: {e})") from e


def split_documents(data: bytes) -> Iterator[bytes]:
    """The documents of a .bson file, each as its bytes; ValueError where the framing breaks."""
    offset = 0
    while offset < len(data):
        if len(data) - offset < 5:
            raise ValueError(f"{len(data) - offset} stray byte(s) at offset {offset}")
        size = int.from_bytes(data[offset : offset + 4], "little", signed=True)
        if size < 5 or offset + size > len(data) or data[offset + size - 1] != 0:
            raise ValueError(f"a document of {size} byte(s) at offset {offset} does not fit the file")
        yield data[offset : offset + size]
        offset += size


def collection_file(directory: Path, database: str, collection: str) -> Path:
    return directory / database / f"{collection}.bson"


def read_manifest(directory: Path) -> Manifest:
    if not directory.is_dir():
        raise UsageError(f"{directory}: not a directory")
    path = directory / MANIFEST
    try:
        return Manifest.from_json(json.loads(path.read_text()))
    except FileNotFoundError as e:
        raise CommandError(f"{path}: no manifest: not a backup, or one that did not finish") from e
    except ValueError as e:
        raise CommandError(f"{path}: not JSON ({e})") from e


def problems(directory: Path, manifest: Manifest) -> list[str]:
    """Everything in `directory` that does not match its manifest: a missing or changed file, a
    count, a document that does not decode. None: the backup is sound."""
    found: list[str] = []
    for database, collections in manifest.databases.items():
        for collection, entry in collections.items():
            path = collection_file(directory, database, collection)
            try:
                data = path.read_bytes()
            except OSError as e:
                found.append(f"{database}.{collection}: cannot read {path} ({e.strerror})")
                continue
            if hashlib.sha256(data).hexdigest() != entry.sha256:
                found.append(f"{database}.{collection}: {path.name} does not match its checksum")
            count = 0
            try:
                for raw in split_documents(data):
                    bson.decode(raw)
                    count += 1
            except (ValueError, bson.errors.InvalidBSON) as e:
                found.append(f"{database}.{collection}: document {count + 1} does not decode ({e})")
                continue
            if count != entry.documents:
                found.append(
                    f"{database}.{collection}: {count} document(s), the manifest says {entry.documents}"
                )
    return found


def index_specs(indexes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The indexes to recreate, as list_indexes describes them, without `_id`'s (always there)."""
    specs = []
    for index in indexes:
        if index["name"] == "_id_":
            continue
        options = {k: v for k, v in index.items() if k not in ("v", "key", "ns")}
        specs.append({"key": [[name, direction] for name, direction in index["key"].items()], **options})
    return specs


def _ordered(collections: Iterable[str]) -> list[str]:
    names = sorted(collections)
    first = [name for name in COLLECTIONS_FIRST if name in names]
    return first + [name for name in names if name not in first]


# Against the store -----------------------------------------------------------------------------


def _databases(client: MongoClient, prefix: str) -> list[tuple[str, Database]]:
    """(suffix, database) of each of the prefix's databases that exists, in DATABASE_ORDER."""
    existing = set(client.list_database_names())
    names = [f"{prefix}_{suffix_of(name)}" for name in DATABASE_ORDER]
    return [
        (suffix_of(name), client.get_database(full, codec_options=RAW))
        for name, full in zip(DATABASE_ORDER, names, strict=True)
        if full in existing
    ]


def _order_versions(client: MongoClient, prefix: str) -> dict[str, int]:
    orders = client[f"{prefix}_{suffix_of('order')}"]["orders"]
    return {document["_id"]: document.get("version", 0) for document in orders.find({}, {"version": 1})}


def _dump(client: MongoClient, prefix: str, directory: Path) -> dict[str, dict[str, CollectionEntry]]:
    databases: dict[str, dict[str, CollectionEntry]] = {}
    for suffix, db in _databases(client, prefix):
        (directory / suffix).mkdir(exist_ok=True)
        entries = databases.setdefault(suffix, {})
        collections = [c for c in db.list_collection_names() if not c.startswith("system.")]
        for name in _ordered(collections):
            if name == RESTORE_MARKER:
                continue
            collection = db[name]
            digest, count = hashlib.sha256(), 0
            with collection_file(directory, suffix, name).open("wb") as out:
                for document in collection.find():
                    out.write(document.raw)
                    digest.update(document.raw)
                    count += 1
            entries[name] = CollectionEntry(count, digest.hexdigest(), index_specs(collection.list_indexes()))
    return databases


def backup(settings: Settings, directory: Path) -> int:
    """Write every database of the configured prefix to `directory` (new, or empty)."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UsageError(f"{directory}: not an empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    client = store.connect(settings)
    try:
        for _ in range(BACKUP_ATTEMPTS):
            created_at = datetime.now(UTC).isoformat()
            before = _order_versions(client, settings.db_prefix)
            databases = _dump(client, settings.db_prefix, directory)
            after = _order_versions(client, settings.db_prefix)
            # Orders that moved while the other databases were read may be restored a step behind
            # what those saw; a quieter moment usually has none.
            moved = sorted(order for order, version in before.items() if after.get(order) != version)
            if not moved:
                break
    finally:
        client.close()
    if not databases:
        raise CommandError(f"no database of the prefix {settings.db_prefix!r} holds anything to back up")
    manifest = Manifest(settings.db_prefix, created_at, databases, moved)
    (directory / MANIFEST).write_text(json.dumps(manifest.as_json(), indent=2) + "\n")
    total = sum(e.documents for collections in databases.values() for e in collections.values())
    print(
        f"backed up {total} document(s) of {len(databases)} database(s) "
        f"of {settings.db_prefix!r} to {directory}"
    )
    if moved:
        print(
            f"warning: {len(moved)} order(s) moved while the backup was read; restored, their sagas "
            "are resumed from the earlier step (docs/operations.md)",
            file=sys.stderr,
        )
    return 0


def verify(directory: Path) -> int:
    """Exit 0 if every file matches the manifest and every document decodes, else 1 with why."""
    manifest = read_manifest(directory)
    found = problems(directory, manifest)
    if found:
        raise CommandError(f"{directory} is not sound: " + "; ".join(found))
    total = sum(e.documents for collections in manifest.databases.values() for e in collections.values())
    print(f"{directory}: sound, {total} document(s) of {manifest.prefix!r} from {manifest.created_at}")
    return 0


def restore(settings: Settings, directory: Path) -> int:
    """Load a sound backup into the configured prefix's databases, which must be empty (or hold
    an interrupted restore of this same backup, which it finishes)."""
    manifest = read_manifest(directory)
    found = problems(directory, manifest)
    if found:
        raise CommandError(f"{directory} is not sound, nothing restored: " + "; ".join(found))
    prefix = settings.db_prefix
    client = store.connect(settings)
    try:
        marker = client[f"{prefix}_{suffix_of('order')}"][RESTORE_MARKER]
        resuming = marker.find_one({"_id": manifest.backup_id}) is not None
        if not resuming:
            occupied = _occupied(client, prefix)
            if occupied:
                raise CommandError(
                    f"the databases of {prefix!r} already hold documents ({', '.join(occupied)}): restore "
                    "onto an empty store, or under another ORDERFLOW_DB_PREFIX (a restore of another "
                    "backup that was interrupted: drop those databases first)"
                )
            marker.insert_one({"_id": manifest.backup_id, "started_at": datetime.now(UTC)})
        total = 0
        for database, collections in manifest.databases.items():
            db = client[f"{prefix}_{database}"]
            for name, entry in collections.items():
                data = collection_file(directory, database, name).read_bytes()
                # insert_many takes raw documents as they are: the backup's bytes go back unchanged.
                documents = cast(
                    list[dict[str, Any]], [RawBSONDocument(raw) for raw in split_documents(data)]
                )
                for start in range(0, len(documents), INSERT_CHUNK):
                    # Under ids taken already (a re-run), the documents are the backup's own.
                    store.insert_new(db[name], documents[start : start + INSERT_CHUNK])
                for index in entry.indexes:
                    options = {k: v for k, v in index.items() if k != "key"}
                    db[name].create_index([(key, direction) for key, direction in index["key"]], **options)
                total += entry.documents
        marker.drop()
    finally:
        client.close()
    print(f"restored {total} document(s) of {manifest.prefix!r} ({manifest.created_at}) into {prefix!r}")
    return 0


def _occupied(client: MongoClient, prefix: str) -> list[str]:
    """The prefix's databases that hold any document."""
    occupied = []
    for name in DATABASE_ORDER:
        db = client[f"{prefix}_{suffix_of(name)}"]
        if any(
            db[c].find_one() is not None for c in db.list_collection_names() if not c.startswith("system.")
        ):
            occupied.append(db.name)
    return occupied
