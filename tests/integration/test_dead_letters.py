"""Dead letters: a message that failed for want of a dependency is replayed after the fix, once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.contracts.events import EventCustomer, OrderStatusChanged
from shared.messaging import topology
from shared.settings import Settings
from tests.integration.conftest import running
from tests.support import (
    Publish,
    SmtpInbox,
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
        result = cli(settings, "dlq", "purge", topology.ORDER_INTAKE_QUEUE)
        assert result.stdout.strip() == f"purged 3 message(s) from {dlq}"
        assert queue_depth(settings.amqp_url, dlq) == 0
