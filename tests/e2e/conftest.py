"""The whole system as separate processes, driven only through the intake, the events and the CLI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.system import System, running_system

# Two inventory processes, so one stands by on the single-active-consumer queue.
POOLS = {"order": 1, "inventory": 2, "payment": 1, "notification": 1, "reporting": 1}


@pytest.fixture(scope="package")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("worker-logs"), POOLS) as system:
        yield system
