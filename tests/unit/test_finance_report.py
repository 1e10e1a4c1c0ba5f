"""The finance report from the ledger's sums, and both reports as self-contained HTML pages."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

from services.reporting.finance import CSV_COLUMNS, build_finance_report
from services.reporting.html import finance_page, sales_page

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sums(*rows: tuple[str, str, str, int, int]) -> list[dict[str, object]]:
    return [
        {"day": day, "method": method, "kind": kind, "amount": amount, "count": count}
        for day, method, kind, amount, count in rows
    ]


def test_captures_and_refunds_add_up_per_day_and_method_and_voids_count_nowhere() -> None:
    report = build_finance_report(
        "CNY",
        sums(
            ("2026-03-02", "alipay", "refund", 500, 1),
            ("2026-03-01", "credit_card", "capture", 2500, 2),
            ("2026-03-01", "credit_card", "refund", 1250, 1),
            ("2026-03-01", "credit_card", "void", 9999, 3),
            ("2026-03-02", "alipay", "capture", 1001, 1),
            ("2026-03-01", "alipay", "void", 700, 1),
        ),
    )
    assert report.as_json() == {
        "currency": "CNY",
        "totals": {"captured": "35.01", "refunded": "17.50", "net": "17.51"},
        "days": [
            {
                "date": "2026-03-01",
                "method": "credit_card",
                "captured": "25.00",
                "refunded": "12.50",
                "net": "12.50",
                "captures": 2,
                "refunds": 1,
            },
            {
                "date": "2026-03-02",
                "method": "alipay",
                "captured": "10.01",
                "refunded": "5.00",
                "net": "5.01",
                "captures": 1,
                "refunds": 1,
            },
        ],
    }
    assert report.csv_rows() == [
        ["2026-03-01", "credit_card", "25.00", "12.50", "12.50", 2, 1],
        ["2026-03-02", "alipay", "10.01", "5.00", "5.01", 1, 1],
    ]
    assert CSV_COLUMNS == ("date", "method", "captured", "refunded", "net", "captures", "refunds")


def test_a_day_of_refunds_only_nets_negative_in_the_currency_s_minor_units() -> None:
    report = build_finance_report("KWD", sums(("2026-03-03", "wechat_pay", "refund", 1234, 2)))
    assert report.as_json()["totals"] == {"captured": "0.000", "refunded": "1.234", "net": "-1.234"}
    assert report.as_json()["days"][0]["net"] == "-1.234"
    assert build_finance_report("JPY", []).as_json() == {
        "currency": "JPY",
        "totals": {"captured": "0", "refunded": "0", "net": "0"},
        "days": [],
    }


class Page(HTMLParser):
    """Parses a page strictly enough to find what a browser would fetch, and the images' data."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.images: list[str] = []
        self.fetched: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.images.append(found["src"] or "")
        elif tag not in ("meta", "br"):
            self.open.append(tag)
        for name in ("src", "href"):
            if (value := found.get(name)) and not value.startswith("data:"):
                self.fetched.append(value)
        if tag in ("script", "link", "iframe"):
            self.fetched.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, f"</{tag}> closes nothing open"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(page: str) -> Page:
    assert page.startswith("<!DOCTYPE html>")
    parser = Page()
    parser.feed(page)
    parser.close()
    assert parser.open == [], "every element is closed"
    assert parser.fetched == [], "nothing is fetched: the page stands alone"
    for src in parser.images:
        match = re.fullmatch(r"data:image/png;base64,([A-Za-z0-9+/=]+)", src)
        assert match, src[:40]
        assert base64.b64decode(match.group(1)).startswith(PNG_SIGNATURE)
    return parser


def test_the_finance_page_has_its_charts_inline_and_its_figures() -> None:
    report = build_finance_report(
        "CNY",
        sums(
            ("2026-03-01", "credit_card", "capture", 2500, 2),
            ("2026-03-02", "alipay", "refund", 500, 1),
            ("2026-03-02", "alipay", "capture", 1001, 1),
        ),
    ).as_json()
    page = parsed(finance_page(report))
    assert len(page.images) == 2
    text = " ".join(page.text)
    for figure in ("35.01", "5.00", "30.01", "2026-03-01", "alipay", "credit_card", "10.01"):
        assert figure in text


def test_the_sales_page_has_its_charts_inline_and_its_figures() -> None:
    report = {
        "currency": "CNY",
        "orders_accepted": 4,
        "orders_confirmed": 3,
        "orders_shipped": 1,
        "orders_completed": 0,
        "orders_cancelled": 1,
        "orders_rejected": 1,
        "units_sold": 5,
        "units_returned": 0,
        "refunds": 1,
        "refunded": "12.50",
        "net_revenue": "62.50",
        "by_sku": [{"sku": "MUG<1>", "units": 5, "revenue": "62.50"}],
        "by_day": [{"day": "2026-03-01", "units": 5, "revenue": "62.50"}],
    }
    html = sales_page(report)
    page = parsed(html)
    assert len(page.images) == 3
    text = " ".join(page.text)
    assert "62.50" in text and "12.50" in text and "MUG<1>" in text
    assert "MUG&lt;1&gt;" in html, "names are escaped"
