"""Losing a RabbitMQ node: the whole system on a cluster of three with quorum queues, every worker
connected to the three nodes, while the node leading the saga's queues is stopped mid-flow."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest

from services.broker_setup import vhost_of
from shared.messaging.transport import topology_of
from tests.faults import invariants
from tests.faults.conftest import SLOW_GATEWAY
from tests.faults.own_cluster import OwnCluster
from tests.faults.own_services import unavailable
from tests.faults.test_faults import Submitter, random_orders, stocked
from tests.support import wait_for
from tests.system import System, running_system

POOLS = {"order": 1, "inventory": 2, "payment": 1, "notification": 1, "reporting": 1}
ORDERS, PER_SECOND = 240, 10


@pytest.fixture(scope="module")
def cluster() -> Iterator[OwnCluster]:
    """Three RabbitMQ nodes of this test's own (scripts/cluster.sh), stopped and removed afterwards."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"the cluster test needs RabbitMQ nodes of its own: {reason}")
    with OwnCluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cluster_system(tmp_path_factory: pytest.TempPathFactory, cluster: OwnCluster) -> Iterator[System]:
    """The whole system on the cluster, in a vhost of its own set up through node 1's management API."""
    with running_system(
        tmp_path_factory.mktemp("cluster-worker-logs"),
        POOLS,
        base=cluster.settings,
        management_url=cluster.management_url(),
        sim_gateway_delay=SLOW_GATEWAY,
    ) as system:
        yield system


def test_losing_the_node_leading_the_saga_queues_loses_doubles_and_oversells_nothing(
    cluster_system: System, cluster: OwnCluster, figure: Any
) -> None:
    system = cluster_system
    vhost = vhost_of(system.settings)
    queues = topology_of(system.settings)
    # The node leading most of the saga's queues goes (node 1, which took the definitions, leads
    # them all, and is every client's first node).
    leaders = cluster.leaders(vhost, queues.saga_queues, via=cluster.nodes[0])
    victim, led = Counter(leaders.values()).most_common(1)[0]
    survivor = next(node for node in cluster.nodes if node != victim)
    consuming = cluster.consumers(vhost, queues.consumed_queues, via=survivor)
    assert all(consuming.values()), consuming

    # Some SKUs run out mid-flow (an oversell would show there), the others never do.
    stock = {**stocked(system, count=2, units=30), **stocked(system, count=3, units=1000)}
    orders = random_orders(stock, count=ORDERS, seed=13)
    submitter = Submitter(system, orders, per_second=PER_SECOND)
    flow_began = time.time()
    submitter.start()
    wait_for(lambda: submitter.sent >= ORDERS // 3, timeout=60, what="orders in flight")
    stopped: list[BaseException | None] = []
    stopper = threading.Thread(target=lambda: stopped.append(_error_of(lambda: cluster.stop_node(victim))))
    stop_began = time.time()
    stopper.start()
    away = _Absence(lambda: cluster.consumers(vhost, queues.consumed_queues, via=survivor), consuming)
    # Every queue has its consumers again, on the nodes left, once the node is gone.
    wait_for(
        lambda: away.back() and not stopper.is_alive(),
        timeout=90,
        interval=0.2,
        what=f"every queue's consumers back after {victim} stopped",
    )
    assert stopped == [None], stopped
    moved = cluster.leaders(vhost, queues.saga_queues, via=survivor)
    assert victim not in moved.values(), moved

    submitter.join(120)
    assert submitter.error is None, submitter.error
    # The node comes back while the last orders settle, and catches up with its queues.
    restarted: list[BaseException | None] = []
    restart = threading.Thread(target=lambda: restarted.append(_error_of(cluster.start_stopped)))
    restart.start()
    figures = invariants.check(system, orders, stock)
    restart.join(300)
    assert restarted == [None], restarted
    assert figures["duplicate_emails"] == 0, figures
    reasons = Counter(o["reason"] for o in system.events.outcomes().values() if o["status"] == "cancelled")
    assert "timeout" not in reasons, f"orders cancelled for waiting out the failover: {reasons}"
    assert reasons["out_of_stock"], "the scarce SKUs never ran out: an oversell could not have shown"

    # The first span is the consumers reconnecting; any later one, leaders moving off the node.
    (began, ended), *moving = away.spans or [[stop_began, stop_began]]
    figure(
        f"cluster of 3 (started in {cluster.started_in:.1f} s): {victim.split('@')[0]}, leading "
        f"{led} of {len(leaders)} saga queues and every client's first node, stopped mid-flow; "
        f"consumers away {ended - began:.1f} s from {began - stop_began:.1f} s into the stop, queues "
        f"unanswering {sum(end - start for start, end in moving):.1f} s more as their leaders moved; "
        f"orders finished {_finished_per_second(system, flow_began, stop_began):.1f}/s before the stop, "
        f"{_finished_per_second(system, stop_began, stop_began + 10):.1f}/s in the 10 s after it "
        f"(submitted at {PER_SECOND}/s), longest pause {_longest_pause(system, stop_began):.1f} s; "
        f"{len(orders)} orders: {figures}, cancelled {dict(reasons)}"
    )


class _Absence:
    """The spans of time during which some queue had fewer consumers than it should (or could not
    say how many: its leader was moving)."""

    def __init__(self, count: Callable[[], dict[str, int]], expected: dict[str, int]) -> None:
        self.count, self.expected = count, expected
        self.spans: list[list[float]] = []
        self._short = False

    def back(self) -> bool:
        """Whether every queue has its consumers now."""
        short = any(n < self.expected[queue] for queue, n in self.count().items())
        now = time.time()
        if short and not self._short:
            self.spans.append([now, now])
        elif short or self._short:
            self.spans[-1][1] = now
        self._short = short
        return not short


def _error_of(task: Callable[[], object]) -> BaseException | None:
    """What `task` raised, if anything (for a task run in a thread of its own)."""
    try:
        task()
    except BaseException as e:
        return e
    return None


def _terminal_times(system: System) -> list[float]:
    return sorted(
        datetime.fromisoformat(event["occurred_at"]).timestamp()
        for event in system.events.outcomes().values()
    )


def _finished_per_second(system: System, start: float, end: float) -> float:
    """Orders that reached their outcome between `start` and `end`, per second."""
    times = _terminal_times(system)
    return sum(start <= t <= end for t in times) / max(end - start, 1e-6)


def _longest_pause(system: System, since: float) -> float:
    """The longest time, from `since` on, with no order reaching its outcome."""
    times = [since, *(t for t in _terminal_times(system) if t >= since)]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
