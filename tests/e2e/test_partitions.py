"""Stock partitioned by SKU: multi-SKU orders reserved per partition, all or none, never oversold."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from shared.messaging import topology
from tests.faults import invariants
from tests.support import unique
from tests.system import System, new_order, running_system

PARTITIONS = 3
# Two inventory processes: each partition has an active consumer in one and a standby in the other.
POOLS = {"order": 1, "inventory": 2, "payment": 1, "notification": 1, "reporting": 1}


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(
        tmp_path_factory.mktemp("worker-logs"), POOLS, inventory_partitions=PARTITIONS
    ) as system:
        yield system


def skus_over_every_partition(per_partition: int) -> list[str]:
    """SKUs named so that each partition owns `per_partition` of them."""
    chosen: dict[int, list[str]] = {partition: [] for partition in range(PARTITIONS)}
    while any(len(skus) < per_partition for skus in chosen.values()):
        sku = unique("P")
        owner = chosen[topology.partition_of(sku, PARTITIONS)]
        if len(owner) < per_partition:
            owner.append(sku)
    return [sku for skus in chosen.values() for sku in skus]


def test_thirty_racing_orders_across_partitions_never_oversell_and_are_all_or_none(
    partitioned: System, figure
) -> None:
    system = partitioned
    skus = skus_over_every_partition(2)
    stock = {sku: 4 for sku in skus}
    for sku, units in stock.items():
        system.stock(sku, units, price="3.00")
    chooser = random.Random(3)
    orders = [
        new_order(*[(sku, chooser.randint(1, 2)) for sku in chooser.sample(skus, chooser.choice([2, 3]))])
        for _ in range(30)
    ]
    for order in orders:
        system.submit(order)
    figures = invariants.check(system, orders, stock)
    outcomes = invariants.settle(system, orders)
    assert {o["reason"] for o in outcomes.values() if o["status"] == "cancelled"} <= {"out_of_stock"}
    assert 0 < figures["confirmed"] < len(orders), "the stock runs out part-way: a race, not a formality"
    for order in orders:
        outcome = outcomes[order["order_id"]]
        if outcome["status"] == "confirmed":
            # All of it: every line, at its price.
            assert sorted((i["sku"], i["quantity"]) for i in outcome["items"]) == sorted(
                (i["sku"], i["quantity"]) for i in order["items"]
            )
    figure(f"partitions: 30 racing orders over {len(skus)} SKUs in {PARTITIONS} partitions: {figures}")
