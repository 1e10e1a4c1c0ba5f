"""A backlog is not a failure: a burst that takes many step timeouts to work off cancels nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.faults import invariants
from tests.support import unique
from tests.system import SERVICES, System, new_order, running_system

STEP_TIMEOUT = 2.0
BURST = 1500


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    pools = dict.fromkeys(SERVICES, 1)
    with running_system(tmp_path_factory.mktemp("worker-logs"), pools, step_timeout=STEP_TIMEOUT) as system:
        yield system


def test_a_burst_much_longer_than_a_step_timeout_times_nothing_out(system: System, figure) -> None:
    skus = [unique("BURST") for _ in range(5)]
    stock = dict.fromkeys(skus, BURST)
    for sku in skus:
        system.stock(sku, BURST, price="1.00")
    orders = [new_order((skus[n % len(skus)], 1)) for n in range(BURST)]
    started = time.monotonic()
    for order in orders:
        system.submit(order)
    outcomes = invariants.settle(system, orders, timeout=600)
    seconds = time.monotonic() - started
    reasons = {o["reason"] for o in outcomes.values() if o["status"] != "confirmed"}
    figure(
        f"backlog: {BURST} orders at once with a {STEP_TIMEOUT:.0f} s step timeout: settled in "
        f"{seconds:.1f} s, {len(outcomes) - sum(o['status'] == 'confirmed' for o in outcomes.values())} "
        f"not confirmed {sorted(reasons)}"
    )
    assert seconds > 3 * STEP_TIMEOUT, (
        "the burst must outlast the step timeout for this test to mean anything"
    )
    assert reasons == set(), "no order may be cancelled for waiting behind other orders"
    invariants.check(system, orders, stock)
