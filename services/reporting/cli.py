"""`orderflow report sales` and `orderflow report finance`, as text, JSON, CSV or an HTML page."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from services.payment.store import PaymentLedger
from services.reporting.finance import CSV_COLUMNS, build_finance_report
from services.reporting.handlers import ReportingHandlers
from services.reporting.store import SalesFacts
from shared import store
from shared.settings import Settings


def sales(settings: Settings, as_json: bool, html: Path | None = None) -> int:
    facts = SalesFacts(store.database(store.connect(settings), settings, "reporting"))
    report = ReportingHandlers(facts, settings.currency).sales_report().as_json()
    if html is not None:
        from services.reporting.html import sales_page

        html.write_text(sales_page(report), encoding="utf-8")
        if not as_json:
            return 0
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"Sales report ({report['currency']})")
    print(f"  orders confirmed  {report['orders_confirmed']}")
    print(f"  orders shipped    {report['orders_shipped']}")
    print(f"  orders completed  {report['orders_completed']}")
    print(f"  orders cancelled  {report['orders_cancelled']}")
    for reason, count in report["cancelled_by_reason"].items():
        print(f"    {reason:<17} {count}")
    print(f"  orders rejected   {report['orders_rejected']}")
    print(f"  orders amended    {report['orders_amended']}")
    print(f"  orders returned   {report['orders_returned']}")
    print(f"  orders exchanged  {report['orders_exchanged']}")
    print(f"  units sold        {report['units_sold']}")
    print(f"  units returned    {report['units_returned']}")
    print(f"  refunds           {report['refunds']} ({report['refunded']})")
    print(f"  net revenue       {report['net_revenue']}")
    if report["by_sku"]:
        print(f"\n  {'SKU':<16} {'UNITS':>7} {'REVENUE':>12}")
        for row in report["by_sku"]:
            print(f"  {row['sku']:<16} {row['units']:>7} {row['revenue']:>12}")
    return 0


def finance(
    settings: Settings,
    first_day: str | None,
    last_day: str | None,
    output: str = "text",
    html: Path | None = None,
) -> int:
    """Money captured and refunded per UTC day and payment method, `first_day` to `last_day`
    included, from the payment worker's ledger (read, as `orderflow status` reads the order's)."""
    ledger = PaymentLedger(store.database(store.connect(settings), settings, "payment"))
    report = build_finance_report(
        settings.currency, ledger.sums_by_day(first_day, last_day, settings.currency)
    )
    view = report.as_json()
    if html is not None:
        from services.reporting.html import finance_page

        html.write_text(finance_page(view), encoding="utf-8")
        if output == "text":
            return 0
    if output == "json":
        print(json.dumps(view, indent=2))
    elif output == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(report.csv_rows())
    else:
        totals = view["totals"]
        print(f"Finance report ({view['currency']})")
        print(f"  captured  {totals['captured']:>14}")
        print(f"  refunded  {totals['refunded']:>14}")
        print(f"  net       {totals['net']:>14}")
        if view["days"]:
            header = ("CAPTURED", "REFUNDED", "NET")
            print(
                f"\n  {'DATE':<10} {'METHOD':<12}", *(f"{h:>12}" for h in header), f"{'#CAP':>5} {'#REF':>5}"
            )
            for row in view["days"]:
                print(
                    f"  {row['date']:<10} {row['method']:<12} {row['captured']:>12} {row['refunded']:>12}"
                    f" {row['net']:>12} {row['captures']:>5} {row['refunds']:>5}"
                )
    return 0
