"""What the machine and the services counted during a run: CPU per process, messages, store operations.

CPU comes from /proc (user plus system time of each process and its children processes); messages
from RabbitMQ's own counters (its rabbitmq_prometheus plugin); store operations from FerretDB's
(its debug endpoint), or MongoDB's `serverStatus` opcounters when the store is MongoDB.
"""

from __future__ import annotations

import os
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from amqp.exceptions import NotFound
from pymongo import MongoClient

from shared.messaging.probe import RabbitQueueProbe
from shared.messaging.tls import AmqpTls

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RABBITMQ_METRICS_URL = "http://127.0.0.1:15692/metrics"
FERRETDB_METRICS_URL = "http://127.0.0.1:8089/debug/metrics"
# FerretDB counts every command; these read or write documents (the rest are handshakes).
STORE_COMMANDS = frozenset(
    {"find", "getMore", "insert", "update", "delete", "findAndModify", "aggregate", "count", "distinct"}
)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def with_descendants(pid: int) -> list[int]:
    """A process and every process it started, and they started, ..."""
    parents = {candidate: _parent_of(candidate) for candidate in _all_pids()}
    family, grew = {pid}, True
    while grew:
        children = {child for child, parent in parents.items() if parent in family} - family
        family |= children
        grew = bool(children)
    return sorted(family)


def pids_running(pattern: str) -> list[int]:
    """Processes whose command line matches `pattern` (a regular expression)."""
    matching = []
    for pid in _all_pids():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if re.search(pattern, command):
            matching.append(pid)
    return matching


class CpuMeter:
    """CPU seconds used by named groups of processes between `start` and `stop`."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self._at_start: dict[int, float] = {}

    def start(self) -> None:
        self._at_start = {pid: cpu_seconds(pid) for find in self.groups.values() for pid in find()}

    def stop(self) -> dict[str, float]:
        used = {}
        for name, find in self.groups.items():
            used[name] = sum(max(0.0, cpu_seconds(pid) - self._at_start.get(pid, 0.0)) for pid in find())
        return used


@dataclass(frozen=True)
class Counts:
    published: float | None  # messages RabbitMQ received from publishers
    delivered: float | None  # messages it delivered to consumers
    store_operations: float | None

    def __sub__(self, other: Counts) -> Counts:
        def minus(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else a - b

        return Counts(
            minus(self.published, other.published),
            minus(self.delivered, other.delivered),
            minus(self.store_operations, other.store_operations),
        )


def _scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return None


def _sum_of(text: str, metric: str, where: Callable[[str], bool] = lambda labels: True) -> float:
    total = 0.0
    for match in re.finditer(rf"^{metric}(?:\{{(.*?)\}})? (\S+)$", text, re.MULTILINE):
        if where(match.group(1) or ""):
            total += float(match.group(2))
    return total


def counts(mongo_url: str) -> Counts:
    rabbit = _scrape(RABBITMQ_METRICS_URL)
    published = _sum_of(rabbit, "rabbitmq_global_messages_received_total") if rabbit else None
    delivered = _sum_of(rabbit, "rabbitmq_global_messages_delivered_total") if rabbit else None
    return Counts(published, delivered, _store_operations(mongo_url))


def _store_operations(mongo_url: str) -> float | None:
    ferretdb = _scrape(FERRETDB_METRICS_URL)
    if ferretdb is not None:
        return _sum_of(
            ferretdb,
            "ferretdb_client_requests_total",
            lambda labels: (
                (m := re.search(r'command="([^"]+)"', labels)) is not None and m.group(1) in STORE_COMMANDS
            ),
        )
    client: MongoClient = MongoClient(mongo_url, serverSelectionTimeoutMS=3000)
    try:
        counters = client.admin.command("serverStatus").get("opcounters", {})
        return float(
            sum(counters.get(name, 0) for name in ("query", "insert", "update", "delete", "getmore"))
        )
    except Exception:
        return None
    finally:
        client.close()


def wait_until_consuming(
    amqp_url: str,
    queues: list[str],
    exited: Callable[[], str | None],
    limit: float = 120.0,
    tls: AmqpTls | None = None,
) -> None:
    """Until every one of `queues` has a consumer. Fails at once when `exited` names a process
    that has ended (it will never consume), or after `limit` seconds."""
    probe = RabbitQueueProbe(amqp_url, tls)
    deadline = time.monotonic() + limit
    try:
        for queue in queues:
            while True:
                try:
                    if probe.backlog(queue).consumers:
                        break
                except NotFound:
                    pass  # not declared yet
                if (gone := exited()) is not None:
                    raise RuntimeError(f"{gone} before anything consumed {queue}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nothing consumes {queue} after {limit:.0f} s")
                time.sleep(0.2)
    finally:
        probe.close()
