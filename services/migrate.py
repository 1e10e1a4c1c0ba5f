"""`orderflow migrate`: every stored document of the configured prefix rewritten in its current version."""

from __future__ import annotations

from services.inventory.store import PRODUCTS, RESERVATIONS
from services.order.store import ORDERS
from services.payment.store import PAYMENTS
from shared import store
from shared.documents import DocumentSchema, Migration, migrate
from shared.settings import Settings

# Every versioned collection, by worker. Workers read older documents of each as they go
# (DocumentSchema.current); this rewrites them all, so the upgrade code of a version can be retired.
SCHEMAS: tuple[DocumentSchema, ...] = (ORDERS, RESERVATIONS, PRODUCTS, PAYMENTS)


def migrate_all(settings: Settings, dry_run: bool) -> int:
    """Upgrade (or, with `dry_run`, count) the documents of every worker's database older than
    their collection's current version. Safe while workers run; a second run changes nothing."""
    client = store.connect(settings)
    try:
        results = [
            migrate(
                store.database(client, settings, schema.service)[schema.collection], schema, dry_run=dry_run
            )
            for schema in SCHEMAS
        ]
    finally:
        client.close()
    for schema, result in zip(SCHEMAS, results, strict=True):
        print(_line(schema, result, dry_run))
    outdated = sum(result.outdated for result in results)
    if not outdated:
        print("nothing to migrate: every document is at its current version")
    elif dry_run:
        print(f"{outdated} documents to upgrade; run `orderflow migrate` to upgrade them")
    return 0


def _line(schema: DocumentSchema, result: Migration, dry_run: bool) -> str:
    where = f"{schema.service}.{schema.collection} (schema {schema.version})"
    if not result.outdated:
        return f"{where}: all current"
    if dry_run:
        return f"{where}: {result.outdated} older documents would be upgraded"
    written = f"{where}: {result.upgraded} upgraded"
    if result.by_workers:
        written += f", {result.by_workers} written by workers meanwhile"
    return written
