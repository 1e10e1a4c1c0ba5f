"""Workers configured by a file alone: `orderflow worker --config FILE` and the pools `orderflow run
--config FILE` starts take their broker, database prefix and metrics ports from it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pymongo import MongoClient

from shared.messaging import topology
from shared.settings import SERVICES, Settings
from tests.e2e.test_supervision import free_ports, serves_metrics
from tests.support import consumer_count, isolated_settings, wait_for
from tests.system import ORDERFLOW


def write_config(path: Path, settings: Settings) -> Path:
    """`settings` as a configuration file (JSON strings and numbers are TOML ones too)."""
    values = settings.model_dump(mode="json")
    for name in values:  # secrets (the roles' URLs) as they are, not masked
        if isinstance(secret := getattr(settings, name), SecretStr):
            values[name] = secret.get_secret_value()
    path.write_text(
        "".join(f"{name} = {json.dumps(value)}\n" for name, value in values.items() if value is not None)
    )
    return path


def without_settings() -> dict[str, str]:
    """This environment without any ORDERFLOW_* variable: the file alone configures."""
    return {name: value for name, value in os.environ.items() if not name.startswith("ORDERFLOW_")}


@contextmanager
def started(*args: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("a") as out:
        process = subprocess.Popen(
            [ORDERFLOW, *args], env=without_settings(), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(30) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()


def databases(settings: Settings) -> set[str]:
    client: MongoClient[dict[str, Any]]
    with MongoClient(settings.mongo_url) as client:
        return {name for name in client.list_database_names() if name.startswith(f"{settings.db_prefix}_")}


def test_a_worker_takes_its_broker_database_and_metrics_port_from_the_file(tmp_path: Path) -> None:
    with isolated_settings(metrics_port=free_ports(1)) as settings:
        config = write_config(tmp_path / "orderflow.toml", settings)
        log = tmp_path / "worker.log"
        with started("worker", "order", "--threads", "2", "--config", str(config), log=log):
            for queue in (topology.ORDER_INTAKE_QUEUE, topology.ORDER_SAGA_QUEUE):
                wait_for(
                    lambda q=queue: consumer_count(settings.amqp_url, q) >= 1,
                    timeout=60,
                    interval=0.2,
                    what=f"a consumer on {queue} in the file's vhost; output in {log}",
                )
            wait_for(
                lambda: serves_metrics(settings.metrics_port or 0), what=f"metrics on the file's port; {log}"
            )
            assert f"order metrics on http://127.0.0.1:{settings.metrics_port}/metrics" in log.read_text()
            wait_for(
                lambda: settings.database_name("order") in databases(settings),
                what=f"the database of the file's prefix, {settings.database_name('order')}",
            )


def test_the_pools_of_orderflow_run_see_the_file(tmp_path: Path) -> None:
    with isolated_settings(metrics_port=free_ports(len(SERVICES))) as settings:
        config = write_config(tmp_path / "orderflow.toml", settings)
        log = tmp_path / "run.log"
        with started("run", "--threads", "2", "--config", str(config), log=log):
            # Each pool is a process of its own that reads its settings: these queues are consumed
            # in the vhost that only the file names, and the databases have the file's prefix.
            for queue in topology.Topology(partitions=settings.inventory_partitions).consumed_queues:
                wait_for(
                    lambda q=queue: consumer_count(settings.amqp_url, q) >= 1,
                    timeout=120,
                    interval=0.2,
                    what=f"a consumer on {queue} in the file's vhost; output in {log}",
                )
            assert settings.metrics_port is not None
            for index, service in enumerate(SERVICES):
                port = settings.metrics_port + index
                wait_for(lambda p=port: serves_metrics(p), what=f"{service} metrics on port {port}; {log}")
            # The pools that create indexes as they start (inventory's database comes with its first write).
            expected = {
                settings.database_name(service)
                for service in ("order", "payment", "notification", "reporting")
            }
            wait_for(lambda: expected <= databases(settings), what=f"databases {sorted(expected)}")
            assert "exited with" not in log.read_text(), f"a pool crashed:\n{log.read_text()}"
