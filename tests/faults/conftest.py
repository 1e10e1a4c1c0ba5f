"""Fault tests: the whole system under crashes, outages and hostile input."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import System, running_system

SERVICES_SCRIPT = str(Path(__file__).resolve().parents[2] / "scripts" / "services.sh")
POOLS = {"order": 1, "inventory": 2, "payment": 1, "notification": 1, "reporting": 1}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("worker-logs"), POOLS) as system:
        yield system


PORTS = {"stop-broker": 5672, "stop-store": 27017}


def services(action: str) -> None:
    """Stop or start the real RabbitMQ or store, as an operator (or an outage) would."""
    subprocess.run([SERVICES_SCRIPT, action], check=True, capture_output=True, timeout=300)
    if action in PORTS:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", PORTS[action])) != 0, f"{action} left the service up"
