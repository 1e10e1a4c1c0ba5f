"""Fault tests: the whole system under crashes, outages and hostile input."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.own_services import OwnServices, unavailable
from tests.system import System, running_system

POOLS = {"order": 1, "inventory": 2, "payment": 1, "notification": 1, "reporting": 1}
# Orders paid with `tok_slow` are in the mix: the simulated provider answers them after this long.
SLOW_GATEWAY = 1.0


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(
        tmp_path_factory.mktemp("worker-logs"), POOLS, sim_gateway_delay=SLOW_GATEWAY
    ) as system:
        yield system


@pytest.fixture(scope="module")
def own_services() -> Iterator[OwnServices]:
    """A broker and a store that only these tests use, which they may stop and start at will."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"outage tests need a broker and a store of their own: {reason}")
    with OwnServices() as services:
        yield services


@pytest.fixture(scope="module")
def outage_system(tmp_path_factory: pytest.TempPathFactory, own_services: OwnServices) -> Iterator[System]:
    """The whole system on the tests' own broker and store."""
    with running_system(
        tmp_path_factory.mktemp("outage-worker-logs"),
        POOLS,
        base=own_services.settings,
        node=own_services.broker.node,
        sim_gateway_delay=SLOW_GATEWAY,
    ) as system:
        yield system
