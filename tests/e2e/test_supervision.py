"""`orderflow run` as a container runtime or a shell drives it: one metrics port per pool, gone within
10 s of SIGTERM with nothing lost, and never outlived by its pools when it is killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shared.messaging import topology
from shared.runtime import DRAIN_SECONDS, EXIT_GRACE_SECONDS
from shared.settings import SERVICES, Settings
from tests.support import (
    Publish,
    SmtpInbox,
    consumer_count,
    free_port,
    isolated_settings,
    settings_env,
    unique,
    wait_for,
)
from tests.system import ORDERFLOW, new_order

# What a container runtime allows between SIGTERM and SIGKILL.
STOP_LIMIT_SECONDS = 10.0


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for its parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def descendants(pid: int) -> set[int]:
    """Every process below `pid`: its pools and what they started."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except OSError:
                continue  # gone meanwhile
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def free_ports(count: int) -> int:
    """The first of `count` consecutive ports nothing listens on."""
    for _ in range(50):
        base = free_port()
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError(f"no {count} consecutive free ports")


def serves_metrics(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.status == 200 and b"orderflow_messages_processed_total" in response.read()
    except OSError:
        return False


class Run:
    """One `orderflow run`, its output in a file."""

    def __init__(self, env: dict[str, str], log: Path, threads: int = 2) -> None:
        self.log = log
        with log.open("a") as out:
            self.process = subprocess.Popen(
                [ORDERFLOW, "run", "--threads", str(threads)], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text()

    def wait_until_consuming(self, settings: Settings) -> None:
        for queue in topology.Topology(partitions=settings.inventory_partitions).consumed_queues:
            wait_for(
                lambda q=queue: consumer_count(settings.amqp_url, q) >= 1,
                timeout=120,
                interval=0.2,
                what=f"a consumer on {queue}; output in {self.log}",
            )

    def stop(self, pools: Iterable[int] = ()) -> int:
        """SIGTERM it (if it still runs) and wait; then kill whatever of `pools` a failed test left."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        finally:
            for pid in pools:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


@contextmanager
def sandbox(**overrides: Any) -> Iterator[tuple[Settings, dict[str, str]]]:
    """Settings of their own, and the environment that gives them to `orderflow run`, with a block
    of five free metrics ports (the default ones may be taken on a shared machine)."""
    with isolated_settings(metrics_port=free_ports(len(SERVICES)), **overrides) as settings:
        yield settings, {**os.environ, **settings_env(settings)}


def test_each_pool_of_orderflow_run_serves_metrics_on_a_port_of_its_own(tmp_path: Path) -> None:
    with sandbox() as (settings, env):
        base = settings.metrics_port
        assert base is not None
        run = Run(env, tmp_path / "run.log")
        try:
            run.wait_until_consuming(settings)
            pools = descendants(run.process.pid)
            for index, service in enumerate(SERVICES):
                port = base + index
                wait_for(lambda p=port: serves_metrics(p), what=f"{service} metrics on port {port}")
                assert f"{service} metrics on http://127.0.0.1:{port}/metrics" in run.output()
            assert "exited with" not in run.output(), f"a pool crashed:\n{run.output()}"
            assert descendants(run.process.pid) == pools, "no pool was restarted"
        finally:
            assert run.stop() == 0


class SmtpTarpit:
    """An SMTP server that accepts connections and never finishes its greeting, one byte at a time
    so that no read times out: whoever sends mail through it is stuck until it closes."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
                self.connections.append(connection)
            except TimeoutError:
                pass
            for connection in list(self.connections):
                try:
                    connection.send(b"2")
                except OSError:
                    self.connections.remove(connection)

    def __enter__(self) -> SmtpTarpit:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection in self.connections:
            connection.close()
        self.listener.close()


def test_sigterm_stops_orderflow_run_within_10_s_and_its_unfinished_work_is_done_after_a_restart(
    tmp_path: Path, figure: Callable[[str], None]
) -> None:
    sku = unique("SKU")
    first, second = new_order((sku, 1)), new_order((sku, 1))
    with SmtpTarpit() as tarpit, sandbox(smtp_url=f"smtp://127.0.0.1:{tarpit.port}") as (settings, env):
        # A notification that a stopped worker held is taken over once its lease runs out.
        env["ORDERFLOW_NOTIFICATION_LEASE_SECONDS"] = "1"
        run = Run(env, tmp_path / "run.log")
        processes: set[int] = set()
        try:
            run.wait_until_consuming(settings)
            subprocess.run(
                [ORDERFLOW, "stock", "set", sku, "--quantity", "10", "--price", "2.00"],
                env=env,
                check=True,
                capture_output=True,
            )
            with Publish(settings) as publish:
                publish.order(first)
                # The notification pool gets stuck mailing the first order's confirmation...
                wait_for(lambda: tarpit.connections, timeout=60, what="an email under way")
                # ...and the second order is taken in, somewhere in its saga when the signal comes.
                publish.order(second)
            processes = descendants(run.process.pid)
            assert len(processes) > len(SERVICES), "five pools, and multiprocessing's resource tracker"
            signalled = time.monotonic()
            run.process.send_signal(signal.SIGTERM)
            wait_for(
                lambda: run.process.poll() is not None and not any(alive(pid) for pid in processes),
                timeout=STOP_LIMIT_SECONDS,
                interval=0.1,
                what=f"every process of orderflow run to stop; output in {run.log}",
            )
            stopped_after = time.monotonic() - signalled
        finally:
            code = run.stop(processes)
        assert code == 0, run.output()
        assert stopped_after < STOP_LIMIT_SECONDS
        figure(f"orderflow run with a pool stuck on SMTP: all gone {stopped_after:.1f} s after SIGTERM")
        assert "still busy" in run.output(), "the stuck notification was left to RabbitMQ, not waited for"

        # The mail server answers again, at the same address: the work handed back is done, once.
        tarpit.close()
        with SmtpInbox(port=tarpit.port) as inbox:
            run = Run(env, tmp_path / "run-again.log")
            try:
                for order in (first, second):
                    email = order["customer"]["email"]
                    wait_for(lambda e=email: inbox.to(e), timeout=90, what=f"the confirmation to {email}")
                for order in (first, second):
                    shown = subprocess.run(
                        [ORDERFLOW, "status", order["order_id"], "--json"],
                        env=env,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    assert json.loads(shown.stdout)["status"] == "confirmed"
                    assert len(inbox.to(order["customer"]["email"])) == 1
                (product,) = json.loads(
                    subprocess.run(
                        [ORDERFLOW, "stock", "show", sku, "--json"], env=env, capture_output=True, check=True
                    ).stdout
                )
                assert (product["available"], product["reserved"], product["sold"]) == (8, 0, 2)
            finally:
                assert run.stop(descendants(run.process.pid)) == 0


def test_the_pools_of_a_killed_orderflow_run_stop_within_seconds(
    tmp_path: Path, figure: Callable[[str], None]
) -> None:
    with sandbox() as (settings, env):
        run = Run(env, tmp_path / "run.log")
        pools: set[int] = set()
        try:
            run.wait_until_consuming(settings)
            pools = descendants(run.process.pid)
            assert len(pools) > len(SERVICES), "five pools, and multiprocessing's resource tracker"
            killed = time.monotonic()
            run.process.kill()
            run.process.wait(5)
            wait_for(
                lambda: not any(alive(pid) for pid in pools),
                timeout=DRAIN_SECONDS + EXIT_GRACE_SECONDS,
                interval=0.1,
                what=f"the pools of a killed orderflow run to stop; output in {run.log}",
            )
            gone_after = time.monotonic() - killed
            for queue in topology.Topology(partitions=settings.inventory_partitions).consumed_queues:
                assert consumer_count(settings.amqp_url, queue) == 0, f"{queue} still consumed"
        finally:
            run.stop(pools)
    assert gone_after < DRAIN_SECONDS + EXIT_GRACE_SECONDS
    figure(f"orderflow run killed with SIGKILL: its pools gone {gone_after:.1f} s later")
