"""Backup while orders are in flight, wipe, restore, run again: every order in the backup finishes,
stock is conserved, the money and the report agree with the orders; a restore beside it is the same."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from services.backup import MANIFEST
from shared.settings import Settings
from tests.faults.invariants import gateway_holds, settle
from tests.support import isolated_settings, settings_env, unique, wait_for
from tests.system import SERVICES, System, new_order, running_system

# A charge with `tok_slow` waits this long at the provider: the backup is taken meanwhile.
SLOW_GATEWAY = 3.0
STEP_TIMEOUT = 6.0
SKUS = {"BK-A": 40, "BK-B": 6}
TERMINAL = ("confirmed", "cancelled", "rejected")


def databases_of(settings: Settings) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every document of every database of the prefix, by database suffix and collection."""
    client: MongoClient = MongoClient(settings.mongo_url, tz_aware=True)
    prefix = f"{settings.db_prefix}_"
    return {
        name.removeprefix(prefix): {
            collection: sorted(client[name][collection].find(), key=lambda d: str(d["_id"]))
            for collection in client[name].list_collection_names()
        }
        for name in client.list_database_names()
        if name.startswith(prefix)
    }


def drop_databases(settings: Settings) -> None:
    """This system's own databases, and no other's."""
    client: MongoClient = MongoClient(settings.mongo_url)
    for name in client.list_database_names():
        if name.startswith(f"{settings.db_prefix}_"):
            client.drop_database(name)


@pytest.fixture
def system(tmp_path: Path) -> Any:
    (tmp_path / "logs").mkdir()
    with running_system(
        tmp_path / "logs",
        dict.fromkeys(SERVICES, 1),
        sim_gateway_delay=SLOW_GATEWAY,
        step_timeout=STEP_TIMEOUT,
        sweep_interval=0.5,
    ) as system:
        yield system


def test_a_backup_taken_while_orders_are_in_flight_restores_into_a_system_that_finishes_them(
    system: System, tmp_path: Path
) -> None:
    skus = {unique(sku): quantity for sku, quantity in SKUS.items()}
    a, b = skus
    for sku, quantity in skus.items():
        system.stock(sku, quantity)
    settled = [new_order((a, 2), (b, 1)) for _ in range(8)] + [new_order((a, 1)) for _ in range(6)]
    for order in settled:
        system.submit(order)
    settle(system, settled, timeout=60)  # some are cancelled: b runs out

    # Charges that take SLOW_GATEWAY seconds: the backup is taken while their sagas wait for them.
    in_flight = [new_order((a, 3), token="tok_slow") for _ in range(3)]
    for order in in_flight:
        system.submit(order)
    orders = system.database("orders").orders
    wait_for(
        lambda: (
            orders.count_documents(
                {"_id": {"$in": [o["order_id"] for o in in_flight]}, "step": "charging_payment"}
            )
            == len(in_flight)
        ),
        what="the slow orders to wait for their charges",
    )
    backup = tmp_path / "backup"
    system.cli("backup", str(backup))
    assert "sound" in system.cli("backup", "verify", str(backup)).stdout
    settle(system, in_flight, timeout=60)  # the live system finishes them, after the backup

    # The store is lost: the workers stop, the databases go, the backup comes back.
    system.workers.stop_all()
    drop_databases(system.settings)
    system.cli("restore", str(backup))
    restored = databases_of(system.settings)
    backed_up = {o["_id"]: o for o in restored["orders"]["orders"]}
    assert {o["order_id"] for o in settled + in_flight} <= backed_up.keys()
    assert {backed_up[o["order_id"]]["step"] for o in in_flight} == {"charging_payment"}

    # Restored beside it under another prefix, it is the same data, indexes included.
    with isolated_settings() as beside:
        env = {**system.env, **settings_env(beside)}
        System(beside, env, system.workers, system.events, system.inbox, system.publish).cli(
            "restore", str(backup)
        )
        assert databases_of(beside) == restored
        client: MongoClient = MongoClient(beside.mongo_url)
        indexes = client[f"{beside.db_prefix}_orders"].orders.index_information()
        assert [spec["key"] for spec in indexes.values()] == [[("_id", 1)], [("deadline", 1)]]

    # Onto a store that holds data, a restore refuses.
    refused = system.cli("restore", str(backup), check=False)
    assert refused.returncode == 1 and "already hold documents" in refused.stderr

    for service in SERVICES:
        system.workers.start(service)
    for service in SERVICES:
        system.wait_until_consuming(service)

    # Every order in the backup reaches its end; the slow ones, restored mid-charge, by the sweep.
    def finished() -> dict[str, dict[str, Any]] | None:
        now = {o["_id"]: o for o in orders.find({"_id": {"$in": list(backed_up)}})}
        done = all(o["status"] in TERMINAL and o.get("deadline") is None for o in now.values())
        return now if done else None

    final = wait_for(finished, timeout=60, interval=0.5, what="every restored order to finish")
    # The live system confirmed them after the backup; restored before their charges were answered,
    # with the charge's command long gone, they time out: compensated by key, then cancelled.
    assert {(final[o["order_id"]]["status"], final[o["order_id"]]["reason"]) for o in in_flight} == {
        ("cancelled", "timeout")
    }
    confirmed = {i: o for i, o in final.items() if o["status"] == "confirmed"}
    assert system.cli_json("sagas", "stuck") == []

    sold: Counter[str] = Counter()
    for order in confirmed.values():
        for line in order["lines"]:
            sold[line["sku"]] += line["quantity"]

    def conserved() -> bool:
        products = {p["sku"]: p for p in system.cli_json("stock", "show", *skus)}
        return all(
            products[sku]["available"] + sold[sku] == quantity and products[sku]["reserved"] == 0
            for sku, quantity in skus.items()
        )

    wait_for(conserved, timeout=30, interval=0.5, what="available + sold = initial, 0 reserved, per SKU")

    expected = {i: (o["total"] if i in confirmed else 0) for i, o in final.items()}
    wait_for(
        lambda: gateway_holds(system, list(final)) == expected,
        timeout=30,
        interval=0.5,
        what="the provider to hold each confirmed total and nothing for a cancelled order",
    )

    def reported() -> bool:
        report = system.cli_json("report", "sales")
        units = {row["sku"]: row["units"] for row in report["by_sku"]}
        return report["orders_confirmed"] == len(confirmed) and all(
            units.get(sku, 0) == sold[sku] for sku in skus
        )

    wait_for(reported, timeout=30, interval=0.5, what="the report to match the orders")
    assert (backup / MANIFEST).exists()
