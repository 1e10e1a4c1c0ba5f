"""The finance report: money captured and refunded per UTC day and payment method, from the
payment worker's ledger (services/payment/ledger.py), as the gateways did it.

Pure: it adds up the ledger's sums per day, method and kind of entry; voids move no money and
count nowhere. Amounts are minor units inside, decimal strings in `as_json`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.money import to_decimal_string

# The columns of `orderflow report finance --csv`, one row per day and method.
CSV_COLUMNS = ("date", "method", "captured", "refunded", "net", "captures", "refunds")


@dataclass
class FinanceRow:
    date: str  # YYYY-MM-DD, UTC
    method: str
    captured: int = 0
    refunded: int = 0
    captures: int = 0
    refunds: int = 0

    @property
    def net(self) -> int:
        return self.captured - self.refunded


@dataclass
class FinanceReport:
    currency: str
    days: list[FinanceRow] = field(default_factory=list)

    @property
    def captured(self) -> int:
        return sum(row.captured for row in self.days)

    @property
    def refunded(self) -> int:
        return sum(row.refunded for row in self.days)

    @property
    def net(self) -> int:
        return self.captured - self.refunded

    def as_json(self) -> dict[str, Any]:
        money = self._money
        return {
            "currency": self.currency,
            "totals": {
                "captured": money(self.captured),
                "refunded": money(self.refunded),
                "net": money(self.net),
            },
            "days": [
                {
                    "date": row.date,
                    "method": row.method,
                    "captured": money(row.captured),
                    "refunded": money(row.refunded),
                    "net": money(row.net),
                    "captures": row.captures,
                    "refunds": row.refunds,
                }
                for row in self.days
            ],
        }

    def csv_rows(self) -> list[list[str | int]]:
        """The rows under CSV_COLUMNS: each day and method, as in `as_json`."""
        return [[day[column] for column in CSV_COLUMNS] for day in self.as_json()["days"]]

    def _money(self, minor: int) -> str:
        return to_decimal_string(minor, self.currency)


def build_finance_report(currency: str, sums: Iterable[dict[str, Any]]) -> FinanceReport:
    """The report of the ledger's sums (`day`, `method`, `kind`, `amount`, `count`; as
    PaymentLedger.sums_by_day gives them), a row per day and method, sorted by both."""
    rows: dict[tuple[str, str], FinanceRow] = {}
    for entry in sums:
        if entry["kind"] not in ("capture", "refund"):
            continue  # a void: nothing was taken, nothing given back
        key = (entry["day"], entry["method"])
        row = rows.setdefault(key, FinanceRow(date=entry["day"], method=entry["method"]))
        if entry["kind"] == "capture":
            row.captured += entry["amount"]
            row.captures += entry["count"]
        else:
            row.refunded += entry["amount"]
            row.refunds += entry["count"]
    return FinanceReport(currency, [rows[key] for key in sorted(rows)])
