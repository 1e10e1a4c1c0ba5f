"""Across machines, over TLS only: a RabbitMQ node that speaks nothing but amqps:// and a FerretDB
that speaks nothing but TLS, both of the test's own and both requiring a client certificate from a
CA made for the test. An order goes through three worker pools, the CLI and our own consumer,
publisher and probe; and a connection without the CA, to the wrong name or without a client
certificate is refused at once, with the reason."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from kombu import Exchange, Queue
from pymongo import MongoClient
from pymongo.errors import ServerSelectionTimeoutError

from shared import sandbox, store
from shared.messaging import topology
from shared.messaging.exchanges import ConsumerThread, InboundMessage
from shared.messaging.ports import Batch
from shared.messaging.probe import RabbitQueueProbe
from shared.messaging.saga_bus import SagaBroker
from shared.messaging.tls import AmqpTls
from shared.messaging.transport import Transport
from shared.settings import ROLES, Settings
from tests.faults.own_services import OwnBroker, OwnStore, unavailable
from tests.support import Publish, free_port, unique, wait_for
from tests.system import ORDERFLOW, QUEUES_OF, Workers, new_order

POOLS = ("order", "inventory", "payment")
# A refused connection must say so within this, not hang.
REFUSED_WITHIN_SECONDS = 10.0


@dataclass(frozen=True)
class Certificates:
    """A CA of the test's own, a server certificate it signed for `localhost` only (so 127.0.0.1 is
    the wrong name), and a client certificate (also as one PEM file with its key, as MongoDB takes it)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_pem: Path


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True)
    (directory / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost\n"
    )
    (directory / "client.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    )
    new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    for command in (
        f"req -x509 {new_key} -days 2 -keyout ca.key -out ca.pem -subj /CN=Orderflow-TLS-test-CA "
        "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign",
        f"req -new {new_key} -keyout server.key -out server.csr -subj /CN=localhost",
        "x509 -req -days 2 -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem "
        "-extfile server.ext",
        f"req -new {new_key} -keyout client.key -out client.csr -subj /CN=orderflow",
        "x509 -req -days 2 -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem "
        "-extfile client.ext",
    ):
        subprocess.run(["openssl", *command.split()], cwd=directory, check=True, capture_output=True)
    pem = directory / "client-with-key.pem"
    pem.write_text((directory / "client.pem").read_text() + (directory / "client.key").read_text())
    return Certificates(
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
        directory / "client.pem",
        directory / "client.key",
        pem,
    )


class TlsBroker(OwnBroker):
    """A RabbitMQ node with no plain AMQP listener: amqps:// on its port, client certificate required."""

    def __init__(self, workdir: Path, certificates: Certificates) -> None:
        super().__init__(workdir)
        for plain in ("RABBITMQ_NODE_PORT", "RABBITMQ_NODE_IP_ADDRESS"):
            del self.env[plain]
        with (workdir / "rabbitmq.conf").open("a") as conf:
            conf.write(
                "\nlisteners.tcp = none\n"
                f"listeners.ssl.default = 127.0.0.1:{self.port}\n"
                f"ssl_options.cacertfile = {certificates.ca}\n"
                f"ssl_options.certfile = {certificates.server_cert}\n"
                f"ssl_options.keyfile = {certificates.server_key}\n"
                "ssl_options.verify = verify_peer\n"
                "ssl_options.fail_if_no_peer_cert = true\n"
            )
        self.url = f"amqps://guest:guest@localhost:{self.port}/%2F"


class TlsStore(OwnStore):
    """A FerretDB with no plain listener: TLS on its port, client certificate required."""

    def __init__(self, workdir: Path, certificates: Certificates) -> None:
        super().__init__(workdir)
        self.listen = [
            "--listen-addr=",
            f"--listen-tls=127.0.0.1:{self.port}",
            f"--listen-tls-cert-file={certificates.server_cert}",
            f"--listen-tls-key-file={certificates.server_key}",
            f"--listen-tls-ca-file={certificates.ca}",
        ]
        self.url = store_url(self.port, certificates.ca, certificates.client_pem)


def store_url(port: int, ca: Path | None, client_pem: Path | None, host: str = "localhost") -> str:
    options = ["tls=true"]
    options += [f"tlsCAFile={quote(str(ca))}"] if ca else []
    options += [f"tlsCertificateKeyFile={quote(str(client_pem))}"] if client_pem else []
    return f"mongodb://{host}:{port}/?{'&'.join(options)}"


@dataclass
class TlsServices:
    certificates: Certificates
    broker: TlsBroker
    store: TlsStore

    def settings(self, **overrides: Any) -> Settings:
        """Every role on the broker's administrator (this node has no role users), over TLS."""
        return Settings(
            **{
                **{f"amqp_url_{role}": None for role in ROLES},
                "amqp_url": self.broker.url,
                "mongo_url": self.store.url,
                "amqp_ca_file": self.certificates.ca,
                "amqp_cert_file": self.certificates.client_cert,
                "amqp_key_file": self.certificates.client_key,
                "db_prefix": unique("tls").replace("-", "_"),
                **overrides,
            }
        )


@pytest.fixture(scope="module")
def services() -> Iterator[TlsServices]:
    reason = unavailable() or (None if shutil.which("openssl") else "no openssl command to make a test CA")
    if reason is not None:
        pytest.skip(f"TLS tests need a broker and a store of their own: {reason}")
    # Not under pytest's temporary directory: its mode keeps the rabbitmq user out.
    workdir = Path(tempfile.mkdtemp(prefix="orderflow-tls-"))
    try:
        certificates = make_certificates(workdir / "certificates")
        broker = TlsBroker(workdir / "rabbitmq", certificates)
        tls_store = TlsStore(workdir / "ferretdb", certificates)
        if os.geteuid() == 0:  # the node runs as the rabbitmq user, and reads its key
            rabbitmq = pwd.getpwnam("rabbitmq")
            for path in (workdir, *(workdir / "rabbitmq").rglob("*"), *(workdir / "certificates").rglob("*")):
                os.chown(path, rabbitmq.pw_uid, rabbitmq.pw_gid)
            for path in (workdir / "rabbitmq", workdir / "certificates"):
                os.chown(path, rabbitmq.pw_uid, rabbitmq.pw_gid)
            os.chmod(workdir, 0o755)
        tls_store.start()
        try:
            broker.start()
            try:
                yield TlsServices(certificates, broker, tls_store)
            finally:
                broker.close()
        finally:
            tls_store.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def worker_env(settings: Settings) -> dict[str, str]:
    """The settings, and no ORDERFLOW_* variable of this machine's (the role users of its broker)."""
    mine = {name: value for name, value in os.environ.items() if not name.startswith("ORDERFLOW_")}
    return {**mine, **sandbox.environment(settings)}


def orderflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ORDERFLOW, *args], env=env, capture_output=True, text=True, timeout=60)


class EventListener:
    """Every public event, through our own QueueConsumer, as an outside subscriber over TLS sees them."""

    def __init__(self, settings: Settings) -> None:
        self.events: list[dict[str, Any]] = []
        self.transport = Transport(settings, "subscriber")
        events = Exchange(topology.EVENTS_EXCHANGE, type="topic", passive=True)
        self.queue = Queue(f"subscriber.{unique('tls')}", events, routing_key="#", auto_delete=True)
        with self.transport.tls.connection(self.transport.amqp_url) as connection:
            self.queue.bind(connection.default_channel).declare()
        self.thread = ConsumerThread(
            self.transport.consumer(self.queue, self._decode, self._handle)(), "tls-events"
        )
        self.thread.start()

    def _decode(self, inbound: InboundMessage) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(inbound.body)
        return event

    def _handle(self, batch: Batch[dict[str, Any]]) -> None:
        self.events.extend(batch)

    def outcome(self, order_id: str) -> dict[str, Any]:
        terminal = ("order.confirmed", "order.cancelled", "order.rejected")
        return wait_for(
            lambda: next(
                (e for e in self.events if e["order_id"] == order_id and e["type"] in terminal), None
            ),
            timeout=60,
            what=f"the outcome of order {order_id}",
        )

    def close(self) -> None:
        self.thread.stop()
        self.thread.join(5)
        self.transport.close()


def test_an_order_goes_through_over_tls_only(services: TlsServices, tmp_path: Path, figure) -> None:
    started = time.monotonic()
    settings = services.settings()
    env = worker_env(settings)
    for command in (("topology", "declare"), ("topology", "upgrade")):
        done = orderflow(env, *command)
        assert done.returncode == 0, done.stderr
    workers = Workers(env, tmp_path)
    listener: EventListener | None = None
    try:
        for service in POOLS:
            workers.start(service)
        probe = RabbitQueueProbe(settings.amqp_url, AmqpTls.of(settings))
        try:
            for service in POOLS:
                for queue in QUEUES_OF[service]:
                    wait_for(
                        lambda q=queue: probe.backlog(q).consumers > 0,
                        timeout=60,
                        interval=0.2,
                        what=f"a consumer on {queue}; logs in {tmp_path}",
                    )
        finally:
            probe.close()
        listener = EventListener(settings)
        sku = unique("TLS")
        stocked = orderflow(env, "stock", "set", sku, "--quantity", "3", "--price", "12.50")
        assert stocked.returncode == 0, stocked.stderr
        order = new_order((sku, 2))
        with Publish(settings) as publish:
            publish.order(order)
        outcome = listener.outcome(order["order_id"])
        assert outcome["type"] == "order.confirmed", outcome

        # The store, over TLS through shared/store.connect with the URL's options as they are.
        client = store.connect(settings, "order")
        try:
            saved = store.database(client, settings, "order").orders.find_one({"_id": order["order_id"]})
        finally:
            client.close()
        assert saved is not None and saved["status"] == "confirmed"

        # Each pool's readiness checks reach the broker (and the store) over TLS too.
        for process in (processes[0] for processes in workers.running.values()):
            _, port = workers.metrics_ports[process.pid]
            wait_for(lambda p=port: _ready(p), timeout=30, interval=0.2, what=f"/readyz on {port}")

        listed = orderflow(env, "dlq", "list")
        assert listed.returncode == 0, listed.stderr
    finally:
        if listener is not None:
            listener.close()
        codes = workers.stop_all()
    assert all(code == 0 for code in codes), f"workers did not stop cleanly: {codes}; logs in {tmp_path}"
    seconds = time.monotonic() - started
    figure(f"tls: an order through three pools, all over amqps:// and TLS to the store, in {seconds:.1f} s")


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _refused(connect: Any) -> str:
    """What connecting said when it failed, within REFUSED_WITHIN_SECONDS."""
    started = time.monotonic()
    with pytest.raises(Exception) as refused:
        connect()
    assert time.monotonic() - started < REFUSED_WITHIN_SECONDS, "a refusal must not hang"
    return _chain(refused.value)


def _chain(error: BaseException) -> str:
    """An error and every error it came from, as one text (pika and kombu wrap the TLS error)."""
    seen: list[str] = []
    current: BaseException | None = error
    while current is not None and len(seen) < 10:
        seen.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return " <- ".join(seen)


def _kombu(url: str, tls: AmqpTls) -> Any:
    def connect() -> None:
        with tls.connection(url, connect_timeout=5) as connection:
            connection.connect()

    return connect


def _dramatiq(url: str, tls: AmqpTls) -> Any:
    def connect() -> None:
        broker = SagaBroker(url, tls)
        try:
            broker.connection  # noqa: B018 (opens pika's connection)
        finally:
            broker.close()

    return connect


def test_without_the_ca_file_the_broker_is_not_trusted(services: TlsServices) -> None:
    settings = services.settings()
    system_cas = AmqpTls(cert_file=settings.amqp_cert_file, key_file=settings.amqp_key_file)
    for connect in (_kombu(settings.amqp_url, system_cas), _dramatiq(settings.amqp_url, system_cas)):
        assert "CERTIFICATE_VERIFY_FAILED" in _refused(connect)
    env = worker_env(settings)
    del env["ORDERFLOW_AMQP_CA_FILE"]
    declared = orderflow(env, "topology", "declare")
    assert declared.returncode == 2, "a setting to fix, not a broker away"
    assert "its certificate is not trusted" in declared.stderr, declared.stderr
    assert "check ORDERFLOW_AMQP_CA_FILE" in declared.stderr, declared.stderr


def test_a_broker_under_another_name_is_refused(services: TlsServices) -> None:
    settings = services.settings()
    wrong = settings.amqp_url.replace("localhost", "127.0.0.1")  # the certificate names localhost only
    tls = AmqpTls.of(settings)
    for connect in (_kombu(wrong, tls), _dramatiq(wrong, tls)):
        said = _refused(connect)
        assert "CERTIFICATE_VERIFY_FAILED" in said and "mismatch" in said, said


def test_without_a_client_certificate_the_broker_refuses(services: TlsServices) -> None:
    settings = services.settings()
    without = AmqpTls(ca_file=settings.amqp_ca_file)
    for connect in (_kombu(settings.amqp_url, without), _dramatiq(settings.amqp_url, without)):
        said = _refused(connect)
        # Over TLS 1.3 the broker asks for the certificate after the client's handshake is done: the
        # client hears its alert, or, if the broker closed first, only the end of the stream.
        assert "CERTIFICATE_REQUIRED" in said or "SSLEOFError" in said, said


def test_the_store_refuses_a_client_without_its_certificate_and_is_not_trusted_without_the_ca(
    services: TlsServices,
) -> None:
    certificates, port = services.certificates, services.store.port
    for url, reason in (
        (store_url(port, certificates.ca, None), "CERTIFICATE_REQUIRED"),
        (store_url(port, None, certificates.client_pem), "CERTIFICATE_VERIFY_FAILED"),
        (store_url(port, certificates.ca, certificates.client_pem, host="127.0.0.1"), "mismatch"),
    ):
        client: MongoClient = MongoClient(url, serverSelectionTimeoutMS=1500)
        try:
            with pytest.raises(ServerSelectionTimeoutError, match=reason):
                client.admin.command("ping")
        finally:
            client.close()


def test_failing_over_checks_each_node_under_its_own_name(services: TlsServices) -> None:
    """The first node named, under a name the certificate does not have, is down: kombu moves on to
    the second, and checks its certificate against the second's name, not the first's."""
    settings = services.settings()
    tls = AmqpTls.of(settings)
    nodes = f"amqps://guest:guest@127.0.0.1:{free_port()}/%2F;{settings.amqp_url}"
    with tls.connection(nodes, connect_timeout=5) as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
        assert connection.connected and connection.ssl["server_hostname"] == "localhost"
