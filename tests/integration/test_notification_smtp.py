"""The mailer against a real SMTP server with a certificate from a private CA made for the test:
certificates are always verified, and credentials never travel in clear."""

from __future__ import annotations

import json
import shutil
import smtplib
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.notification.channels import InsecureSmtp, SmtpMailer
from services.notification.domain import Notification
from shared.contracts.events import EventCustomer, EventLine, OrderStatusChanged
from shared.messaging import topology
from tests.integration.conftest import running
from tests.support import Publish, SmtpInbox, isolated_settings, queue_messages, unique, wait_for

CREDENTIALS = ("orders", "s3cret:pass")


@dataclass(frozen=True)
class PrivateCa:
    """A CA of our own and a server certificate it signed for 127.0.0.1 and localhost."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@pytest.fixture(scope="session")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCa:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test CA")
    directory = tmp_path_factory.mktemp("private-ca")
    ca, cert, key = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    (directory / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    for command in (
        f"req -x509 {new_key} -keyout ca.key -out {ca.name} -subj /CN=Orderflow-test-CA "
        "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign",
        f"req -new {new_key} -keyout {key.name} -out server.csr -subj /CN=127.0.0.1",
        f"x509 -req -in server.csr -CA {ca.name} -CAkey ca.key -CAcreateserial -out {cert.name} "
        "-extfile server.ext",
    ):
        subprocess.run(["openssl", *command.split()], cwd=directory, check=True, capture_output=True)
    return PrivateCa(ca, cert, key)


def notification() -> Notification:
    return Notification(
        notification_id=unique("n"),
        order_id=unique("A"),
        kind="order.confirmed",
        recipient="alice@example.com",
        subject="Your order is confirmed",
        body="Thank you!",
    )


def mailer(url: str, ca_file: Path | None = None) -> SmtpMailer:
    return SmtpMailer(url, "Orderflow <orders@example.com>", timeout=5.0, ca_file=ca_file)


def tls_inbox(private_ca: PrivateCa, mode: str, credentials: tuple[str, str] | None = None) -> SmtpInbox:
    """A server with the private CA's certificate: STARTTLS on smtp://, or TLS at once on smtps://."""
    context = private_ca.server_context()
    if mode == "starttls":
        return SmtpInbox(starttls=context, credentials=credentials)
    return SmtpInbox(implicit_tls=context, credentials=credentials)


@pytest.mark.parametrize("mode", ["starttls", "smtps"])
def test_credentials_go_only_over_tls_verified_with_the_private_ca(private_ca: PrivateCa, mode: str) -> None:
    with tls_inbox(private_ca, mode, CREDENTIALS) as inbox:
        assert inbox.url.startswith("smtps://" if mode == "smtps" else "smtp://")
        sent = notification()
        mailer(inbox.url, private_ca.ca_file).send(sent)
    assert inbox.logins == [(*CREDENTIALS, True)]
    assert inbox.over_tls == [True]
    assert inbox.messages[0]["Message-ID"] == f"<{sent.notification_id}@orderflow>"


def test_a_server_without_starttls_never_sees_the_credentials() -> None:
    with SmtpInbox(credentials=CREDENTIALS, auth_in_clear=True) as inbox:
        with pytest.raises(InsecureSmtp, match="does not offer STARTTLS"):
            mailer(inbox.url).send(notification())
        assert inbox.logins == [] and inbox.messages == []
        # This server takes a login in clear: only the mailer's refusal kept the password off the wire.
        with smtplib.SMTP("127.0.0.1", inbox.port, timeout=5.0) as naive:
            naive.login(*CREDENTIALS)
    assert inbox.logins == [(*CREDENTIALS, False)]


@pytest.mark.parametrize("credentials", [CREDENTIALS, None], ids=["login", "anonymous"])
@pytest.mark.parametrize("mode", ["starttls", "smtps"])
def test_a_certificate_from_a_ca_not_trusted_is_refused(
    private_ca: PrivateCa, mode: str, credentials: tuple[str, str] | None
) -> None:
    with (
        tls_inbox(private_ca, mode, credentials) as inbox,
        pytest.raises(InsecureSmtp, match="certificate not trusted"),
    ):
        mailer(inbox.url).send(notification())  # the system's CAs only: ours is not among them
    assert inbox.logins == [] and inbox.messages == []


def test_without_credentials_the_mailer_still_upgrades_when_the_server_offers_starttls(
    private_ca: PrivateCa,
) -> None:
    with SmtpInbox(starttls=private_ca.server_context()) as inbox:
        mailer(inbox.url, private_ca.ca_file).send(notification())
    assert inbox.over_tls == [True]


def test_without_credentials_a_relay_without_starttls_still_gets_the_mail() -> None:
    with SmtpInbox() as inbox:
        mailer(inbox.url).send(notification())
    assert inbox.over_tls == [False]


def confirmed_event() -> OrderStatusChanged:
    return OrderStatusChanged(
        type="order.confirmed",
        order_id=unique("A"),
        status="confirmed",
        customer=EventCustomer(customer_id="C-1", name="Alice", email="alice@example.com"),
        items=[EventLine(sku="SKU-1", quantity=2, unit_price="12.50", line_total="25.00")],
        total="25.00",
        currency="CNY",
        payment_method="alipay",
    )


def test_the_notification_worker_trusts_the_ca_file_it_is_configured_with(private_ca: PrivateCa) -> None:
    event = confirmed_event()
    with (
        tls_inbox(private_ca, "starttls", CREDENTIALS) as inbox,
        isolated_settings(smtp_url=inbox.url, smtp_ca_file=private_ca.ca_file) as settings,
        running("notification", settings, [topology.NOTIFICATION_EVENTS_QUEUE]),
        Publish(settings) as publisher,
    ):
        publisher.event(event)
        wait_for(lambda: inbox.messages, what="the email")
    assert inbox.messages[0]["Subject"] == f"Your order {event.order_id} is confirmed"
    assert inbox.logins == [(*CREDENTIALS, True)] and inbox.over_tls == [True]


def test_the_notification_worker_dead_letters_at_once_what_it_cannot_send_safely() -> None:
    with (
        SmtpInbox(credentials=CREDENTIALS, auth_in_clear=True) as inbox,
        isolated_settings(smtp_url=inbox.url, max_retries=5) as settings,
        running("notification", settings, [topology.NOTIFICATION_EVENTS_QUEUE]),
        Publish(settings) as publisher,
    ):
        event = confirmed_event()
        publisher.event(event)
        dlq = topology.dead_letter_queue(topology.NOTIFICATION_EVENTS_QUEUE)
        ((raw, headers),) = wait_for(lambda: queue_messages(settings.amqp_url, dlq), what="the dead letter")
    assert json.loads(raw)["order_id"] == event.order_id
    assert headers["x-orderflow-reason"].startswith("InsecureSmtp: ")
    assert "does not offer STARTTLS" in headers["x-orderflow-reason"]
    assert inbox.logins == [] and inbox.messages == []
