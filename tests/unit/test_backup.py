"""Backup files and their manifest: what `orderflow backup verify` and `restore` check, without a store."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import bson
import pytest

from services.backup import (
    MANIFEST,
    CollectionEntry,
    Manifest,
    collection_file,
    index_specs,
    problems,
    read_manifest,
    split_documents,
    verify,
)
from shared.errors import CommandError, UsageError

DOCUMENTS = [
    {"_id": "A-1", "version": 3, "at": datetime(2024, 5, 1, tzinfo=UTC), "lines": [{"sku": "S", "q": 2}]},
    {"_id": "A-2", "version": 1, "total": 1250},
]


def write_backup(directory: Path) -> Manifest:
    data = b"".join(bson.encode(document) for document in DOCUMENTS)
    path = collection_file(directory, "orders", "orders")
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    entry = CollectionEntry(len(DOCUMENTS), hashlib.sha256(data).hexdigest(), [{"key": [["deadline", 1]]}])
    manifest = Manifest("live", "2024-05-01T00:00:00+00:00", {"orders": {"orders": entry}})
    (directory / MANIFEST).write_text(json.dumps(manifest.as_json()))
    return manifest


def test_files_are_documents_one_after_another_as_mongodump_writes_them() -> None:
    data = b"".join(bson.encode(document) for document in DOCUMENTS)
    assert [bson.decode(raw) for raw in split_documents(data)] == [
        {**DOCUMENTS[0], "at": DOCUMENTS[0]["at"].replace(tzinfo=None)},
        DOCUMENTS[1],
    ]
    assert bson.decode_all(data)  # what standard tools read, the same bytes


def test_a_sound_backup_verifies_and_its_manifest_reads_back(tmp_path: Path) -> None:
    manifest = write_backup(tmp_path)
    assert problems(tmp_path, manifest) == []
    assert read_manifest(tmp_path) == manifest
    assert read_manifest(tmp_path).backup_id == manifest.backup_id
    assert verify(tmp_path) == 0


def test_a_tampered_file_is_detected(tmp_path: Path) -> None:
    manifest = write_backup(tmp_path)
    path = collection_file(tmp_path, "orders", "orders")
    path.write_bytes(path.read_bytes().replace(b"A-2", b"A-9"))  # still decodes, same count
    assert problems(tmp_path, manifest) == ["orders.orders: orders.bson does not match its checksum"]
    with pytest.raises(CommandError, match=r"not sound: orders\.orders: orders\.bson does not match"):
        verify(tmp_path)


def test_a_truncated_file_a_missing_file_and_a_wrong_count_are_detected(tmp_path: Path) -> None:
    manifest = write_backup(tmp_path)
    path = collection_file(tmp_path, "orders", "orders")
    path.write_bytes(path.read_bytes()[:-3])
    found = problems(tmp_path, manifest)
    assert found[0] == "orders.orders: orders.bson does not match its checksum"
    assert found[1].startswith("orders.orders: document 2 does not decode")

    manifest.databases["orders"]["orders"].documents = 3
    write_backup(tmp_path / "again")
    again = read_manifest(tmp_path / "again")
    again.databases["orders"]["orders"].documents = 3
    assert problems(tmp_path / "again", again) == ["orders.orders: 2 document(s), the manifest says 3"]

    path.unlink()
    assert problems(tmp_path, manifest)[0].startswith("orders.orders: cannot read")


def test_not_a_backup(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a directory"):
        read_manifest(tmp_path / "nowhere")
    with pytest.raises(CommandError, match="no manifest"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text('{"format_version": 99}')
    with pytest.raises(CommandError, match="not a backup manifest of format 1"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text('{"format_version": 1, "prefix": "p"}')
    with pytest.raises(CommandError, match="incomplete"):
        read_manifest(tmp_path)


def test_indexes_are_kept_in_key_order_without_the_id_index() -> None:
    listed = [
        {"v": 2, "key": {"_id": 1}, "name": "_id_"},
        {"v": 2, "key": {"status": 1, "decided_at": -1}, "name": "held", "unique": True},
    ]
    assert index_specs(listed) == [
        {"key": [["status", 1], ["decided_at", -1]], "name": "held", "unique": True}
    ]
