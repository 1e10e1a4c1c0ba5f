"""A RabbitMQ cluster of three nodes of the tests' own, started and stopped with scripts/cluster.sh.

Its nodes have names and ports no other test or checkout uses, and their data in a directory that is
removed afterwards, so a test may stop any node of it at will.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kombu import Connection

from shared import sandbox
from shared.settings import ROLES, Settings
from tests.faults.own_services import ROOT

CLUSTER_SCRIPT = ROOT / "scripts" / "cluster.sh"
NODES = 3


def _free_ports(count: int) -> int:
    """The first of `count` consecutive ports on loopback that nothing listens on, below Linux's
    ephemeral range (where an outgoing connection could take one before its node listens)."""
    rng = random.Random()
    for _ in range(100):
        first = rng.randrange(20_000, 32_000 - count)
        probes = [socket.socket() for _ in range(count)]
        try:
            for offset, probe in enumerate(probes):
                probe.bind(("127.0.0.1", first + offset))
            return first
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise AssertionError(f"no {count} consecutive free ports")


class OwnCluster:
    """Three RabbitMQ nodes of one cluster, the administrator's URLs and each role's (every one
    naming the three nodes), and what a test needs to stop and start a node."""

    def __init__(self) -> None:
        # Not under pytest's temporary directory: its mode keeps the rabbitmq user out.
        self.workdir = Path(tempfile.mkdtemp(prefix="orderflow-cluster-"))
        os.chmod(self.workdir, 0o755)
        self.name = f"orderflow-cluster-{uuid.uuid4().hex[:8]}"
        host = socket.gethostname().split(".")[0]
        self.nodes = [f"{self.name}-{i}@{host}" for i in range(1, NODES + 1)]
        amqp, dist, management = (_free_ports(NODES) for _ in range(3))
        self.amqp_ports = [amqp + i for i in range(NODES)]
        self.management_ports = [management + i for i in range(NODES)]
        self.env = {
            **os.environ,
            "ORDERFLOW_CLUSTER_DIR": str(self.workdir),
            "ORDERFLOW_CLUSTER_NAME": self.name,
            "ORDERFLOW_CLUSTER_AMQP_PORT": str(amqp),
            "ORDERFLOW_CLUSTER_DIST_PORT": str(dist),
            "ORDERFLOW_CLUSTER_MANAGEMENT_PORT": str(management),
        }
        self.started_in = 0.0

    def script(self, *args: str) -> str:
        result = subprocess.run(
            [str(CLUSTER_SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise AssertionError(f"cluster.sh {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result.stdout

    def __enter__(self) -> OwnCluster:
        began = time.monotonic()
        try:
            self.script("start")
        except BaseException:
            self.__exit__()
            raise
        self.started_in = time.monotonic() - began
        return self

    def __exit__(self, *exc: object) -> None:
        self.script("stop", "--clean")

    def management_url(self, node: str | None = None) -> str:
        """The management API of `node` (the first node if None), as the administrator."""
        port = self.management_ports[self.nodes.index(node) if node else 0]
        return f"http://guest:guest@127.0.0.1:{port}"

    def amqp_url(self, node: str) -> str:
        """The administrator's URL of one node alone."""
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_ports[self.nodes.index(node)]}/%2F"

    @property
    def settings(self) -> Settings:
        """The cluster as Orderflow sees it: every URL names the three nodes, and queues are quorum
        queues. The store is the machine's."""
        urls = ";".join(self.amqp_url(node) for node in self.nodes)
        role_urls = sandbox.local_role_urls(self.workdir / "rabbitmq-users.env")
        roles: dict[str, Any] = {
            f"amqp_url_{role}": role_urls[f"ORDERFLOW_AMQP_URL_{role.upper()}"] for role in ROLES
        }
        return Settings(amqp_url=urls, queue_type="quorum", **roles)

    def stop_node(self, node: str) -> None:
        """Stop a node as an operator would; it stays a member of the cluster."""
        sandbox.rabbitmqctl("stop", node=node)

    def start_stopped(self) -> None:
        """Start the nodes that are not running again."""
        self.script("start")

    def leaders(self, vhost: str, queues: list[str], via: str) -> dict[str, str]:
        """The node leading each of `queues`, as node `via` sees it."""
        listing = sandbox.rabbitmqctl("list_queues", "-q", "-p", vhost, "name", "leader", node=via)
        leaders = dict(line.split("\t")[:2] for line in listing.splitlines() if "\t" in line)
        return {queue: leaders[queue] for queue in queues}

    def consumers(self, vhost: str, queues: list[str], via: str) -> dict[str, int]:
        """How many consumers each of `queues` has, asked of node `via` (0 while it cannot say)."""
        url = self.amqp_url(via).replace("%2F", quote(vhost, safe=""))
        counts = {}
        with Connection(url, connect_timeout=2) as connection:
            for queue in queues:
                try:
                    with connection.channel() as channel:
                        counts[queue] = channel.queue_declare(queue, passive=True).consumer_count
                except Exception:  # a queue electing its leader, or the connection gone
                    counts[queue] = 0
        return counts
