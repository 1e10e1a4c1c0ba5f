"""`orderflow report finance` on the real services equals the gateway's own books to the minor
unit: per UTC day and payment method, what was captured and refunded and how many times, with
declines, a charge whose reply was lost, a gateway that failed, cancels and amendments among them."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.money import to_decimal_string, to_minor
from tests.e2e.test_order_requests import confirmed_order, the_event
from tests.support import unique, wait_for
from tests.system import System, new_order

Figures = dict[tuple[str, str], tuple[int, int, int, int]]  # (day, method) -> captured, refunded, counts


def gateway_books(system: System) -> Figures:
    """Captured and refunded per UTC day and method, and how many of each, from the simulated
    gateway's own collections (a refund counts on its own day, under its charge's method)."""
    books = system.database("simulated_gateway")
    charges = list(books.charges.find())
    method_of = {charge["charge_id"]: charge["method"] for charge in charges}
    figures: dict[tuple[str, str], list[int]] = {}
    for charge in charges:
        row = figures.setdefault((_day(charge["at"]), charge["method"]), [0, 0, 0, 0])
        row[0] += charge["amount"]
        row[2] += 1
    for refund in books.refunds.find():
        row = figures.setdefault((_day(refund["at"]), method_of[refund["charge_id"]]), [0, 0, 0, 0])
        row[1] += refund["amount"]
        row[3] += 1
    return {key: (row[0], row[1], row[2], row[3]) for key, row in figures.items()}


def reported(report: dict[str, Any]) -> Figures:
    currency = report["currency"]
    return {
        (day["date"], day["method"]): (
            to_minor(day["captured"], currency),
            to_minor(day["refunded"], currency),
            day["captures"],
            day["refunds"],
        )
        for day in report["days"]
    }


def _day(at: datetime) -> str:
    return (at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)).date().isoformat()


def test_the_finance_report_equals_the_gateway_s_books_to_the_minor_unit(
    system: System, tmp_path: Path
) -> None:
    sku = unique("MUG")
    system.stock(sku, 100, price="12.35")
    paid = confirmed_order(system, (sku, 2))
    by_alipay = confirmed_order(system, (sku, 1), method="alipay")
    by_wechat = confirmed_order(system, (sku, 3), method="wechat_pay")
    confirmed_order(system, (sku, 1), token="tok_lost_reply")  # captured, found by asking the gateway
    for token, method in (("tok_declined", "alipay"), ("tok_gateway_error", "wechat_pay")):
        refused = new_order((sku, 1), token=token, method=method)
        system.submit(refused)
        assert system.outcome(refused["order_id"])["status"] == "cancelled"
    system.cli("orders", "cancel", by_alipay["order_id"])
    system.cli("orders", "amend", by_wechat["order_id"], "--items", json.dumps([{"sku": sku, "quantity": 1}]))
    system.cli("orders", "amend", paid["order_id"], "--items", json.dumps([{"sku": sku, "quantity": 4}]))
    for order in (by_alipay, by_wechat):
        the_event(system, order["order_id"], "order.refunded")

    # Settled once the report says what the books say (other tests' refunds may still be under way).
    report = wait_for(
        lambda: (r := system.cli_json("report", "finance")) and reported(r) == gateway_books(system) and r,
        timeout=60,
        interval=0.5,
        what="the finance report to equal the gateway's books",
    )
    books = gateway_books(system)
    currency = report["currency"]
    captured = sum(row[0] for row in books.values())
    refunded = sum(row[1] for row in books.values())
    assert report["totals"] == {
        "captured": to_decimal_string(captured, currency),
        "refunded": to_decimal_string(refunded, currency),
        "net": to_decimal_string(captured - refunded, currency),
    }
    ours = {key: row for key, row in reported(report).items() if key[1] in ("alipay", "wechat_pay")}
    assert sum(row[1] for row in ours.values()) >= 1235 + 2 * 1235, "the cancel's and amendment's refunds"
    for day in report["days"]:
        assert to_minor(day["net"], currency) == to_minor(day["captured"], currency) - to_minor(
            day["refunded"], currency
        )

    today = datetime.now(UTC).date()
    tomorrow = (today + timedelta(days=1)).isoformat()
    nothing = system.cli_json("report", "finance", "--from", tomorrow)
    assert nothing["days"] == [] and nothing["totals"]["captured"] == to_decimal_string(0, currency)
    # A day's bounds are inclusive: every day of the books, taken one at a time, adds up again.
    days = sorted({day for day, _ in books})
    by_day: Figures = {}
    for day in days:
        by_day.update(reported(system.cli_json("report", "finance", "--from", day, "--to", day)))
    assert by_day == books

    rows = list(csv.reader(io.StringIO(system.cli("report", "finance", "--csv").stdout)))
    assert rows[0] == ["date", "method", "captured", "refunded", "net", "captures", "refunds"]
    assert rows[1:] == [[str(day[column]) for column in rows[0]] for day in report["days"]]

    page = tmp_path / "finance.html"
    assert system.cli("report", "finance", "--html", str(page)).stdout == ""
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 2 and all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    assert all(report["totals"][figure] in html for figure in ("captured", "refunded", "net"))
    assert self_contained(html)


def test_the_sales_report_as_an_html_page(system: System, tmp_path: Path) -> None:
    sku = unique("CAP")
    system.stock(sku, 10, price="7.00")
    confirmed_order(system, (sku, 2))
    page = tmp_path / "sales.html"
    result = system.cli("report", "sales", "--html", str(page), "--json")
    report = json.loads(result.stdout)
    html = page.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3 and all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    assert report["net_revenue"] in html and report["refunded"] in html
    assert self_contained(html)


def self_contained(html: str) -> bool:
    """Nothing a browser would fetch: no script, and every src or href a data URI."""
    return "<script" not in html and not re.search(r'(?:src|href)="(?!data:)', html)
