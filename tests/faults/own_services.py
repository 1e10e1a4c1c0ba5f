"""A RabbitMQ node and a FerretDB store of the outage tests' own, on ports of their own.

An outage test stops and starts the broker or the store under a running system. Doing that to the
machine's shared services would break every other test running against them, and a store started
by another checkout cannot be stopped from this one at all; these are started (and stopped, as an
outage would) by the tests alone, with their data in a directory that is removed afterwards.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

from pymongo import MongoClient

from shared import sandbox
from shared.settings import Settings
from tests.support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
SERVICES_SCRIPT = ROOT / "scripts" / "services.sh"
BROKER_CONF = ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf"
# Debian's rabbitmq-server: run as root, it runs the node as the `rabbitmq` user (whose Erlang
# cookie rabbitmqctl uses too); the rabbitmq user may run it directly.
RABBITMQ_SERVER = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"


def unavailable() -> str | None:
    """Why this machine cannot run services of the tests' own, or None if it can."""
    if not Path(RABBITMQ_SERVER).exists():
        return f"no {RABBITMQ_SERVER} (Debian's rabbitmq-server) to start a RabbitMQ node of the tests' own"
    try:
        rabbitmq = pwd.getpwnam("rabbitmq").pw_uid
    except KeyError:
        return "no `rabbitmq` user to run a RabbitMQ node of the tests' own as"
    if os.geteuid() not in (0, rabbitmq):
        return "only root or the rabbitmq user may start a RabbitMQ node (Debian's rabbitmq-server)"
    return None


def _reachable(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class OwnBroker:
    """A RabbitMQ node of its own: its name, AMQP and distribution ports, data, logs and config."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.node = f"orderflow-faults-{uuid.uuid4().hex[:8]}@{socket.gethostname().split('.')[0]}"
        self.port = free_port()
        self.dist_port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self._process: subprocess.Popen[bytes] | None = None
        (workdir / "conf.d").mkdir(parents=True)
        # Orderflow's broker settings, and no plugins (the prometheus one would want port 15692).
        shutil.copy(BROKER_CONF, workdir / "rabbitmq.conf")
        (workdir / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
            "RABBITMQ_CONFIG_FILES": str(workdir / "conf.d"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        }

    def start(self) -> None:
        log = (self.workdir / "rabbitmq-server.log").open("ab")
        self._process = subprocess.Popen(
            [RABBITMQ_SERVER], env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        wait_for(self._booted, timeout=120, interval=0.5, what=f"RabbitMQ node {self.node} to boot")

    def stop(self) -> None:
        """Stop the node as an operator (or an outage) would, and wait until it is gone."""
        sandbox.rabbitmqctl("stop", node=self.node)
        if self._process is not None:
            self._process.wait(60)
            self._process = None
        wait_for(lambda: not _reachable(self.port), what=f"RabbitMQ node {self.node} to stop")

    def close(self) -> None:
        if self._process is None:
            return
        try:
            self.stop()
        except Exception:
            # It would not stop: end the node's own process (its pid file is ours), then the wrapper.
            pid_file = self.workdir / "rabbitmq.pid"
            if pid_file.exists():
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
            self._process.kill()
            self._process.wait(30)
            self._process = None

    def _booted(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise AssertionError(f"RabbitMQ node {self.node} exited; see {self.workdir}/log")
        if not _reachable(self.port):
            return False
        try:
            sandbox.rabbitmqctl("await_startup", "--timeout", "30", node=self.node)
        except subprocess.CalledProcessError:
            return False
        return True


class OwnStore:
    """A FerretDB of its own (the build `make services` makes), on a port and a directory of its own."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.debug_port = free_port()
        self.url = f"mongodb://127.0.0.1:{self.port}/"
        # Where it listens (a subclass may listen with TLS instead: tests/faults/test_tls.py).
        self.listen = [f"--listen-addr=127.0.0.1:{self.port}"]
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True)
        self.binary = subprocess.run(
            [SERVICES_SCRIPT, "ferretdb-binary"], check=True, capture_output=True, text=True, timeout=900
        ).stdout.strip()

    def start(self) -> None:
        log = (self.workdir / "ferretdb.log").open("ab")
        self._process = subprocess.Popen(
            [
                self.binary,
                "--handler=sqlite",
                f"--sqlite-url=file:{self.workdir}/",
                f"--state-dir={self.workdir}",
                *self.listen,
                f"--debug-addr=127.0.0.1:{self.debug_port}",
                "--telemetry=disable",
                "--log-level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._answers, timeout=60, interval=0.2, what="the tests' own FerretDB to answer")

    def stop(self) -> None:
        """Stop the store as an operator (or an outage) would (SIGTERM), and wait until it is gone."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(60)
            self._process = None
        assert not _reachable(self.port), "the store still answers"

    def close(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(30)
            self._process = None

    def _answers(self) -> bool:
        if self._process is not None and self._process.poll() is not None:
            raise AssertionError(f"FerretDB exited; see {self.workdir}/ferretdb.log")
        client: MongoClient = MongoClient(self.url, serverSelectionTimeoutMS=500)
        try:
            client.admin.command("ping")
            return True
        except Exception:
            return False
        finally:
            client.close()


class OwnServices:
    """A broker and a store of the tests' own, for as long as the block lasts."""

    def __init__(self) -> None:
        # Not under pytest's temporary directory: its mode keeps the rabbitmq user out.
        self.workdir = Path(tempfile.mkdtemp(prefix="orderflow-faults-"))
        self.broker = OwnBroker(self.workdir / "rabbitmq")
        self.store = OwnStore(self.workdir / "ferretdb")
        if os.geteuid() == 0:
            rabbitmq = pwd.getpwnam("rabbitmq")
            for path in (self.workdir / "rabbitmq", *(self.workdir / "rabbitmq").rglob("*")):
                os.chown(path, rabbitmq.pw_uid, rabbitmq.pw_gid)
            os.chown(self.workdir, rabbitmq.pw_uid, rabbitmq.pw_gid)
            os.chmod(self.workdir, 0o755)

    @property
    def settings(self) -> Settings:
        return Settings(amqp_url=self.broker.url, mongo_url=self.store.url)

    def __enter__(self) -> OwnServices:
        try:
            self.store.start()
            self.broker.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.broker.close()
        finally:
            self.store.close()
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self, which: str) -> None:
        """Stop the broker or the store, then start it again on the same port and data."""
        service = {"stop-broker": self.broker, "stop-store": self.store}[which]
        service.stop()
        service.start()
