"""The payment worker's ledger on the real store: an entry recorded again is kept once, and the
finance report's sums are selected by day and grouped by method and kind."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from services.payment.ledger import EntryKind, LedgerEntry
from services.payment.store import PaymentLedger
from shared import store
from shared.settings import Settings


@pytest.fixture
def ledger(settings: Settings) -> Iterator[PaymentLedger]:
    client = store.connect(settings)
    ledger = PaymentLedger(store.database(client, settings, "payment"))
    ledger.ensure_indexes()
    yield ledger
    client.close()


def entry(
    kind: EntryKind, reference: str, amount: int, at: datetime, method: str = "credit_card"
) -> LedgerEntry:
    return LedgerEntry(kind, method, reference, amount, "CNY", at, order_id="A-1", key="A-1")


def test_entries_are_recorded_once_and_summed_per_day_method_and_kind(ledger: PaymentLedger) -> None:
    first, late, second = (
        datetime(2026, 3, 1, 9, tzinfo=UTC),
        datetime(2026, 3, 1, 23, 59, 59, 999000, tzinfo=UTC),
        datetime(2026, 3, 2, 0, 0, tzinfo=UTC),
    )
    batch = [
        entry(EntryKind.CAPTURE, "ch_1", 2500, first),
        entry(EntryKind.CAPTURE, "ch_2", 1250, late),
        entry(EntryKind.REFUND, "re_1", 500, second),
        entry(EntryKind.CAPTURE, "ch_3", 700, second, method="alipay"),
        entry(EntryKind.VOID, "A-9", 900, second),
    ]
    ledger.record(batch)
    ledger.record(batch[1:3])  # a redelivery: nothing twice
    ledger.record([entry(EntryKind.CAPTURE, "ch_1", 9999, second)])  # the same capture, heard again
    rows = ledger.sums_by_day(None, None, "CNY")
    assert [(r["day"], r["method"], r["kind"], r["amount"], r["count"]) for r in rows] == [
        ("2026-03-01", "credit_card", "capture", 3750, 2),
        ("2026-03-02", "alipay", "capture", 700, 1),
        ("2026-03-02", "credit_card", "refund", 500, 1),
        ("2026-03-02", "credit_card", "void", 900, 1),
    ]
    assert [r["day"] for r in ledger.sums_by_day("2026-03-02", "2026-03-02", "CNY")] == ["2026-03-02"] * 3
    assert [r["day"] for r in ledger.sums_by_day(None, "2026-03-01", "CNY")] == ["2026-03-01"]
    assert ledger.sums_by_day("2026-03-03", None, "CNY") == []
    assert ledger.sums_by_day(None, None, "USD") == []
