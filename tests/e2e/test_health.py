"""/healthz and /readyz of a real worker pool, as a container runtime probes them: ready only while
every process reaches RabbitMQ and the store, alive through their outages, and not alive while its
processes keep failing at start.

The outages are real, between one pool and the services every other test keeps using: the pool
reaches them through relays that a test cuts (every connection dropped, new ones refused).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from shared.health import CRASH_LOOP_EXITS
from tests.support import isolated_settings, settings_env, wait_for
from tests.system import ORDERFLOW


class Relay:
    """A TCP relay on loopback to a real service, on the same port from start to end; cut, it drops
    every connection through it and refuses new ones, until restored."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open = True
        self._sockets: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._open = False
            sockets, self._sockets = self._sockets, set()
        for each in sockets:
            _drop(each)

    def restore(self) -> None:
        with self._lock:
            self._open = True

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self._target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _drop(client)
                continue
            with self._lock:
                accepted = self._open
                if accepted:
                    self._sockets |= {client, upstream}
            if not accepted:
                _drop(client)
                _drop(upstream)
                continue
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._sockets -= {source, sink}
        _drop(source)
        _drop(sink)


def _drop(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)  # wakes the thread reading it
    connection.close()


def through(url: str, relay: Relay) -> str:
    """`url` with the relay in place of its host and port."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{relay.port}".lstrip("@")))


@contextmanager
def relayed(url: str) -> Iterator[Relay]:
    """A relay to the service at `url` (the machine's services: one node each)."""
    parts = urlsplit(url)
    relay = Relay(parts.hostname or "127.0.0.1", parts.port or 0)
    try:
        yield relay
    finally:
        relay.close()


class Pool:
    """One `orderflow worker` pool, its output in a file, its endpoint on a port it picked itself."""

    def __init__(self, env: dict[str, str], log: Path, processes: int, service: str = "reporting") -> None:
        self.log = log
        with log.open("a") as out:
            self.process = subprocess.Popen(
                [ORDERFLOW, "worker", service, "--processes", str(processes), "--threads", "1"],
                env={**env, "ORDERFLOW_METRICS_PORT": "0"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.port: int = wait_for(self._port, timeout=60, interval=0.1, what=f"the endpoint; output in {log}")

    def _port(self) -> int | None:
        assert self.process.poll() is None, f"the pool exited:\n{self.log.read_text()}"
        found = re.search(r" metrics on http://[^ ]+:(\d+)/metrics", self.log.read_text())
        return int(found.group(1)) if found else None

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def ready_says(self, status: int, *, alive: bool = True, saying: str = "", times: int = 1) -> str:
        """Wait until /readyz answers `status`, its body saying `saying` `times` times; at every poll
        on the way, /healthz must answer 200 if `alive`."""

        def answered() -> str | None:
            if alive:
                live = self.get("/healthz")
                assert live == (200, "ok\n"), f"/healthz: {live}; output in {self.log}"
            code, body = self.get("/readyz")
            return body if code == status and body.count(saying) >= times else None

        return wait_for(answered, timeout=60, interval=0.2, what=f"/readyz {status} {saying!r}; {self.log}")

    def says(self, path: str, status: int, timeout: float) -> str:
        """Wait until `path` answers `status`; what it said."""

        def answered() -> str | None:
            code, body = self.get(path)
            return body if code == status else None

        return wait_for(
            answered, timeout=timeout, interval=0.5, what=f"{path} {status}; output in {self.log}"
        )

    def workers(self) -> set[int]:
        """The worker processes of the pool (not multiprocessing's resource tracker)."""
        found = set()
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # not a process, or gone meanwhile
            if int(stat.rpartition(")")[2].split()[1]) == self.process.pid and b"spawn_main" in command:
                found.add(int(entry.name))
        return found

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


@pytest.mark.parametrize("processes", [1, 2], ids=["one process", "two processes"])
def test_a_pool_is_ready_only_while_it_reaches_the_broker_and_the_store_and_alive_throughout(
    tmp_path: Path, processes: int
) -> None:
    with ExitStack() as stack:
        settings = stack.enter_context(isolated_settings())
        broker = stack.enter_context(relayed(settings.amqp_url))
        store = stack.enter_context(relayed(settings.mongo_url))
        env = {**os.environ, **settings_env(settings)}
        for name, value in list(env.items()):
            if not value:  # unset: the role uses the administrative URL, relayed too
                continue
            if name.startswith("ORDERFLOW_AMQP_URL"):  # and each role's own, if it has one
                env[name] = through(value, broker)
            elif name.startswith("ORDERFLOW_MONGO_URL"):
                env[name] = through(value, store)
        pool = Pool(env, tmp_path / "pool.log", processes)
        try:
            pool.ready_says(200)
            for relay, dependency in ((store, "store"), (broker, "broker")):
                relay.cut()
                body = pool.ready_says(503, saying=f"{dependency} unreachable", times=processes)
                assert len(set(re.findall(r"^pid (\d+):", body, re.MULTILINE))) == processes, body
                relay.restore()
                pool.ready_says(200)
        finally:
            assert pool.stop() == 0, pool.log.read_text()


def test_a_pool_whose_processes_keep_failing_at_start_is_not_alive_until_one_runs_steadily(
    tmp_path: Path,
) -> None:
    config = tmp_path / "orderflow.toml"
    config.write_text('log_level = "INFO"\n')
    with isolated_settings() as settings:
        env = {**os.environ, **settings_env(settings), "ORDERFLOW_CONFIG": str(config)}
        pool = Pool(env, tmp_path / "pool.log", processes=2)
        try:
            pool.ready_says(200)
            # Every process started from now on fails as it reads its settings, and exits.
            config.unlink()
            workers = pool.workers()
            assert len(workers) == 2
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            body = pool.says("/healthz", 503, timeout=90)
            assert body.count(f"exited {CRASH_LOOP_EXITS} times in a row") == 2, body
            assert "no such file" in pool.log.read_text()
            assert pool.get("/readyz")[0] == 503
            config.write_text('log_level = "INFO"\n')
            assert pool.says("/healthz", 200, timeout=120) == "ok\n"
            pool.ready_says(200)
        finally:
            assert pool.stop() == 0, pool.log.read_text()
