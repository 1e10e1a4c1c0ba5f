"""Dead letters: a message that failed for want of a dependency is replayed after the fix, once."""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dramatiq
import pytest
from kombu import Connection, Queue

from shared.contracts import saga
from shared.contracts.events import EventCustomer, OrderStatusChanged
from shared.messaging import routes, topology
from shared.settings import Settings
from tests.integration.conftest import running
from tests.support import (
    Publish,
    SmtpInbox,
    dramatiq_payloads,
    free_port,
    isolated_settings,
    queue_depth,
    settings_env,
    unique,
    wait_for,
)

ORDERFLOW = str(Path(sys.executable).with_name("orderflow"))


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", **settings_env(settings)}
    return subprocess.run([ORDERFLOW, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def broken_smtp_settings(smtp_port: int):
    # Nothing listens on the port yet: the SMTP dependency is broken.
    with isolated_settings(smtp_url=f"smtp://127.0.0.1:{smtp_port}", max_retries=2) as settings:
        yield settings


def test_a_dead_letter_is_replayed_after_the_fix_and_completes_once(broken_smtp_settings, smtp_port) -> None:
    settings = broken_smtp_settings
    order_id = unique("A")
    event = OrderStatusChanged(
        event_id=unique("evt"),
        type="order.confirmed",
        order_id=order_id,
        status="confirmed",
        customer=EventCustomer(customer_id="C-1", name="Alice", email="alice@example.com"),
        total="5.00",
        currency="CNY",
    )
    dlq = topology.dead_letter_queue(topology.NOTIFICATION_EVENTS_QUEUE)
    with running("notification", settings, [topology.NOTIFICATION_EVENTS_QUEUE]):
        with Publish(settings) as publish:
            publish.event(event)
        wait_for(lambda: queue_depth(settings.amqp_url, dlq) == 1, interval=0.3, what="the dead letter")

        listing = json.loads(
            cli(settings, "dlq", "list", topology.NOTIFICATION_EVENTS_QUEUE, "--json").stdout
        )
        assert len(listing) == 1
        assert listing[0]["reason"].startswith("gave up after 3 attempts: DeliveryFailed")
        assert json.loads(listing[0]["body"])["event_id"] == event.event_id
        counts = json.loads(cli(settings, "dlq", "list", "--json").stdout)
        assert {c["queue"]: c["messages"] for c in counts}[dlq] == 1, "listing leaves the message in place"

        with SmtpInbox(port=smtp_port) as inbox:  # the fix
            replay = cli(settings, "dlq", "replay", dlq, "--id", listing[0]["id"])
            assert replay.returncode == 0, replay.stdout + replay.stderr
            (email,) = wait_for(lambda: inbox.to("alice@example.com"), what="the email")
            assert email["Subject"] == f"Your order {order_id} is confirmed"
            again = cli(settings, "dlq", "replay", dlq, "--id", listing[0]["id"])
            assert again.returncode == 1 and "replayed already" in again.stdout
            assert queue_depth(settings.amqp_url, dlq) == 0
            wait_for(
                lambda: queue_depth(settings.amqp_url, topology.NOTIFICATION_EVENTS_QUEUE) == 0, interval=0.3
            )
            assert len(inbox.messages) == 1


def test_purge_empties_a_dead_letter_queue(settings: Settings) -> None:
    with Publish(settings) as publish:
        for _ in range(3):
            publish.order(b"garbage")
    with running("order", settings, [topology.ORDER_INTAKE_QUEUE]):
        dlq = topology.dead_letter_queue(topology.ORDER_INTAKE_QUEUE)
        wait_for(lambda: queue_depth(settings.amqp_url, dlq) == 3, interval=0.3, what="three dead letters")
        result = cli(settings, "dlq", "purge", topology.ORDER_INTAKE_QUEUE, "--yes")
        assert result.stdout.strip() == f"purged 3 message(s) from {dlq}"
        assert queue_depth(settings.amqp_url, dlq) == 0


TOKEN = "tok_live_4242424242429876"  # a payment provider's token: never shown, always replayed


def properties_and_bodies(settings: Settings, queue: str) -> list[tuple[bytes, str | None, str | None]]:
    """Take every message off a queue: (body, content type, content encoding) as they travel."""
    taken = []
    with Connection(settings.amqp_url) as connection, connection.channel() as channel:
        channel.auto_decode = False  # the bytes, not py-amqp's reading of them
        bound = Queue(queue, no_declare=True).bind(channel)
        while (message := bound.get(no_ack=True)) is not None:
            taken.append((message.body, message.content_type, message.content_encoding))
    return sorted(taken, key=lambda item: item[0])


def test_dead_letters_of_any_bytes_are_listed_with_tokens_masked_and_replayed_as_they_came(
    settings: Settings,
) -> None:
    submission = {
        "order_id": unique("A"),
        "customer": {"customer_id": "C-1", "name": "Alice", "email": "alice@example.com"},
        "items": [{"sku": "SKU-1", "quantity": "2"}],  # "2" is not a quantity: rejected
        "payment": {"method": "credit_card", "token": TOKEN},
    }
    published = [
        (b"\xff\xfe\x00not json\x80\x1b[2J", "application/json"),
        (json.dumps(submission).encode(), "application/json"),
        (json.dumps(submission).encode()[:-20], None),  # truncated, with its token
    ]
    with Publish(settings) as publish:
        for body, content_type in published:
            publish.order(body, content_type=content_type)
    dlq = topology.dead_letter_queue(topology.ORDER_INTAKE_QUEUE)
    with running("order", settings, [topology.ORDER_INTAKE_QUEUE]):
        wait_for(lambda: queue_depth(settings.amqp_url, dlq) == 3, interval=0.3, what="three dead letters")

    listed = cli(settings, "dlq", "list", topology.ORDER_INTAKE_QUEUE, "--json")
    assert listed.returncode == 0, listed.stderr
    assert TOKEN not in listed.stdout
    letters = sorted(json.loads(listed.stdout), key=lambda letter: letter["size"])
    assert [letter["size"] for letter in letters] == sorted(len(body) for body, _ in published)
    binary = next(letter for letter in letters if letter["body"] is None)
    assert base64.b64decode(binary["body_base64"]) == published[0][0]
    rejected = next(letter for letter in letters if letter["size"] == len(published[1][0]))
    assert json.loads(rejected["body"])["payment"]["token"] == "***9876"

    text = cli(settings, "dlq", "list", topology.ORDER_INTAKE_QUEUE)
    assert text.returncode == 0, text.stderr
    assert TOKEN not in text.stdout and "\x1b" not in text.stdout
    assert f"({len(published[0][0])} bytes, not UTF-8)" in text.stdout

    replay = cli(settings, "dlq", "replay", dlq, "--all")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert properties_and_bodies(settings, topology.ORDER_INTAKE_QUEUE) == sorted(
        (body, content_type, None if content_type is None else "utf-8") for body, content_type in published
    )


def test_a_charge_payment_dead_letter_hides_its_token_and_replays_it(settings: Settings) -> None:
    payload = {"message_id": unique("m"), "order_id": unique("A"), "currency": "CNY"}
    payload |= {"method": "credit_card", "token": TOKEN}  # no amount: it breaks the contract
    envelope = dramatiq.Message(
        queue_name=topology.PAYMENT_QUEUE,
        actor_name=routes.actor_name(saga.ChargePayment),
        args=(payload,),
        kwargs={},
        options={},
    )
    dlq = topology.dead_letter_queue(topology.PAYMENT_QUEUE)
    with running("payment", settings, [topology.PAYMENT_QUEUE]):
        with Publish(settings) as publish:
            publish.raw("", topology.PAYMENT_QUEUE, envelope.encode())
        wait_for(lambda: queue_depth(settings.amqp_url, dlq) == 1, interval=0.3, what="the dead letter")

    for listing in (cli(settings, "dlq", "list", dlq), cli(settings, "dlq", "list", dlq, "--json")):
        assert listing.returncode == 0, listing.stderr
        assert TOKEN not in listing.stdout and "amount: Field required" in listing.stdout
    assert "***9876" in cli(settings, "dlq", "list", dlq, "--json").stdout
    replay = cli(settings, "dlq", "replay", dlq, "--all")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    (replayed,) = dramatiq_payloads(settings.amqp_url, topology.PAYMENT_QUEUE)
    assert replayed["token"] == TOKEN and replayed["order_id"] == payload["order_id"]


def on_a_terminal(
    settings: Settings, *args: str, answer: str, meanwhile: Callable[[], None]
) -> tuple[int, str]:
    """Run `orderflow` with a terminal as its stdin: wait for its question, do `meanwhile`, answer.
    Returns the exit code and everything it printed."""
    terminal, stdin = pty.openpty()
    env = {"PATH": "/usr/bin:/bin", **settings_env(settings)}
    process = subprocess.Popen(
        [ORDERFLOW, *args], env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    os.close(stdin)
    assert process.stderr is not None
    asked = b""
    deadline = time.monotonic() + 60
    while b"[y/N]" not in asked:
        ready, _, _ = select.select([process.stderr], [], [], max(0.0, deadline - time.monotonic()))
        assert ready and process.poll() is None, f"no question asked: {asked!r}"
        asked += os.read(process.stderr.fileno(), 1024)
    meanwhile()
    os.write(terminal, answer.encode() + b"\n")
    out, err = process.communicate(timeout=60)
    os.close(terminal)
    return process.returncode, (asked + err + out).decode()


def test_purge_asks_on_a_terminal_removes_only_what_was_agreed_and_refuses_without_one(
    settings: Settings,
) -> None:
    dlq = topology.dead_letter_queue(topology.ORDER_INTAKE_QUEUE)
    with Publish(settings) as publish:

        def dead_letter() -> None:
            publish.raw("", dlq, b"garbage")

        dead_letter()
        dead_letter()
        refused = cli(settings, "dlq", "purge", topology.ORDER_INTAKE_QUEUE)
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            f"orderflow: refusing to purge 2 message(s) from {dlq} unconfirmed: no terminal to ask on; "
            "pass --yes"
        )
        code, said = on_a_terminal(settings, "dlq", "purge", dlq, answer="n", meanwhile=lambda: None)
        assert (code, queue_depth(settings.amqp_url, dlq)) == (1, 2), said
        assert f"purge 2 message(s) from {dlq}? [y/N]" in said and "nothing purged" in said

        # One more arrives while the question is open: it is not among those agreed to.
        code, said = on_a_terminal(settings, "dlq", "purge", dlq, answer="y", meanwhile=dead_letter)
        assert code == 0 and f"purged 2 message(s) from {dlq}" in said, said
        assert queue_depth(settings.amqp_url, dlq) == 1
        forced = cli(settings, "dlq", "purge", dlq, "--yes")
        assert forced.stdout.strip() == f"purged 1 message(s) from {dlq}"
        assert queue_depth(settings.amqp_url, dlq) == 0
