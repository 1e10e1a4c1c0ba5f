"""`orderflow report sales`."""

from __future__ import annotations

import json

from services.reporting.handlers import ReportingHandlers
from services.reporting.store import SalesFacts
from shared import store
from shared.settings import Settings


def sales(settings: Settings, as_json: bool) -> int:
    facts = SalesFacts(store.database(store.connect(settings), settings, "reporting"))
    report = ReportingHandlers(facts, settings.currency).sales_report().as_json()
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
