"""Reports as one self-contained HTML page: charts drawn by matplotlib, embedded as PNG data URIs,
and the figures as tables. Nothing is fetched when the page is opened: no file, script or font.

matplotlib is imported here only when a page is drawn (`orderflow report ... --html`), with its
Agg backend, so no worker ever loads it.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from decimal import Decimal
from html import escape
from typing import Any

TOP_SKUS = 10

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
"""


def sales_page(report: dict[str, Any]) -> str:
    """The sales report (as `report sales --json` gives it): revenue per day, orders by outcome,
    top SKUs by revenue."""
    currency = report["currency"]
    outcomes = {
        status: report[f"orders_{status}"]
        for status in ("confirmed", "shipped", "completed", "cancelled", "rejected")
    }
    top = sorted(report["by_sku"], key=lambda row: Decimal(row["revenue"]), reverse=True)[:TOP_SKUS]
    totals = [
        ("orders accepted", report["orders_accepted"]),
        *((f"orders {status}", count) for status, count in outcomes.items()),
        ("units sold", report["units_sold"]),
        ("units returned", report["units_returned"]),
        ("refunds", report["refunds"]),
        (f"refunded ({currency})", report["refunded"]),
        (f"net revenue ({currency})", report["net_revenue"]),
    ]
    days = [row["day"] for row in report["by_day"]]
    return _page(
        f"Sales report ({currency})",
        [
            _table(["figure", "value"], totals),
            _chart(
                f"Revenue per day ({currency})",
                lambda ax: ax.bar(days, [_plotted(row["revenue"]) for row in report["by_day"]]),
                rotate=True,
            ),
            _table(
                ["day", "units", f"revenue ({currency})"],
                [_values(row, "day", "units", "revenue") for row in report["by_day"]],
            ),
            _chart(
                "Orders by outcome",
                lambda ax: ax.bar(list(outcomes), list(outcomes.values()), color="#4a7ab5"),
            ),
            _chart(
                f"Top SKUs by revenue ({currency})",
                lambda ax: ax.barh(
                    [row["sku"] for row in reversed(top)], [_plotted(row["revenue"]) for row in reversed(top)]
                ),
            ),
            _table(
                ["SKU", "units", f"revenue ({currency})"],
                [_values(row, "sku", "units", "revenue") for row in top],
            ),
        ],
    )


def finance_page(report: dict[str, Any]) -> str:
    """The finance report (as `report finance --json` gives it): captured and refunded per day,
    refunds per method."""
    currency, totals = report["currency"], report["totals"]
    per_day: dict[str, list[Decimal]] = {}
    refunds_per_method: dict[str, Decimal] = {}
    for row in report["days"]:
        day = per_day.setdefault(row["date"], [Decimal(0), Decimal(0)])
        day[0] += Decimal(row["captured"])
        day[1] += Decimal(row["refunded"])
        refunds_per_method[row["method"]] = refunds_per_method.get(row["method"], Decimal(0)) + Decimal(
            row["refunded"]
        )

    def captured_and_refunded(ax: Any) -> None:
        positions = range(len(per_day))
        ax.bar(
            [p - 0.2 for p in positions], [_plotted(c) for c, _ in per_day.values()], 0.4, label="captured"
        )
        ax.bar(
            [p + 0.2 for p in positions], [_plotted(r) for _, r in per_day.values()], 0.4, label="refunded"
        )
        ax.set_xticks(list(positions), list(per_day))
        ax.legend()

    columns = ["date", "method", "captured", "refunded", "net", "captures", "refunds"]
    return _page(
        f"Finance report ({currency})",
        [
            _table(
                ["captured", "refunded", "net"], [(totals["captured"], totals["refunded"], totals["net"])]
            ),
            _chart(f"Captured and refunded per day ({currency})", captured_and_refunded, rotate=True),
            _chart(
                f"Refunds per method ({currency})",
                lambda ax: ax.bar(
                    list(refunds_per_method),
                    [_plotted(r) for r in refunds_per_method.values()],
                    color="#c0504d",
                ),
            ),
            _table(columns, [_values(row, *columns) for row in report["days"]]),
        ],
    )


def _page(title: str, sections: Sequence[str]) -> str:
    body = "\n".join(sections)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
        f"<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(str(cell))}</th>" for cell in header)
    lines = [
        "<tr>"
        + "".join(
            f'<td class="n">{escape(str(c))}</td>' if _numeric(c) else f"<td>{escape(str(c))}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    ]
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(lines) + "\n</table>"


def _chart(title: str, draw: Callable[[Any], Any], *, rotate: bool = False) -> str:
    """A figure drawn by `draw` on its axes, as an <img> with the PNG inline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(8, 3.5))
    try:
        draw(ax)
        ax.set_title(title)
        if rotate:
            ax.tick_params(axis="x", labelrotation=45)
        figure.tight_layout()
        png = io.BytesIO()
        figure.savefig(png, format="png", dpi=100)
    finally:
        plt.close(figure)
    data = base64.b64encode(png.getvalue()).decode("ascii")
    return f'<h2>{escape(title)}</h2>\n<img alt="{escape(title)}" src="data:image/png;base64,{data}">'


def _plotted(amount: str | Decimal) -> float:
    # Only a bar's height: the figures themselves stay exact decimal strings in the tables.
    return float(amount)


def _values(row: dict[str, Any], *columns: str) -> list[Any]:
    return [row[column] for column in columns]


def _numeric(cell: Any) -> bool:
    text = str(cell).lstrip("-")
    return text.replace(".", "", 1).isdigit()
