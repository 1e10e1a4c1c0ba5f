"""A currency without decimals, end to end: yen are counted as yen, never as hundredths of one."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.support import unique, wait_for
from tests.system import ORDERFLOW, System, new_order, running_system

POOLS = {"order": 1, "inventory": 1, "payment": 1, "notification": 1, "reporting": 1}


@pytest.fixture(scope="module")
def yen_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("yen-worker-logs"), POOLS, currency="JPY") as system:
        yield system


def test_a_yen_order_is_priced_charged_announced_and_reported_in_whole_yen(yen_system: System) -> None:
    system = yen_system
    sku = unique("TEA")
    refused = system.cli("stock", "set", sku, "--quantity", "5", "--price", "1500.5", check=False)
    assert refused.returncode == 2 and "more decimals than JPY allows" in refused.stderr
    system.stock(sku, 5, price="1500")
    assert system.cli_json("stock", "show", sku)[0]["price"] == "1500"
    order = new_order((sku, 2))
    system.submit(order)

    outcome = system.outcome(order["order_id"])
    assert (outcome["status"], outcome["total"], outcome["currency"]) == ("confirmed", "3000", "JPY")
    assert outcome["items"] == [{"sku": sku, "quantity": 2, "unit_price": "1500", "line_total": "3000"}]
    charged = system.database("simulated_gateway").charges.find_one({"_id": order["order_id"]})
    assert charged is not None and (charged["amount"], charged["currency"]) == (3000, "JPY"), charged
    assert system.cli_json("status", order["order_id"])["total"] == "3000"
    (email,) = wait_for(lambda: system.emails_to(order["customer"]["email"]), what="the confirmation email")
    assert "3000 JPY" in email.get_payload()

    def sold() -> dict | None:
        report = system.cli_json("report", "sales")
        return next((row for row in report["by_sku"] if row["sku"] == sku), None)

    assert wait_for(sold, what="the sale in the report") == {"sku": sku, "units": 2, "revenue": "3000"}


def test_an_unknown_currency_stops_the_cli_at_startup() -> None:
    result = subprocess.run(
        [ORDERFLOW, "stock", "show"],
        env={**os.environ, "ORDERFLOW_CURRENCY": "XYZ"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "unknown currency 'XYZ'" in result.stderr
