"""Upgrading a broker an earlier build declared: a clear refusal to start, then `orderflow topology
upgrade` redeclares what is idle and leaves whatever still holds messages to the operator."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from amqp.exceptions import NotFound
from kombu import Connection

from shared.messaging import topology
from shared.messaging.transport import topology_of
from shared.settings import Settings
from tests.integration.conftest import running
from tests.integration.test_dead_letters import cli
from tests.support import consumer_count, isolated_settings, queue_depth, queue_messages, wait_for


@pytest.fixture
def settings() -> Iterator[Settings]:
    """A vhost with nothing of Orderflow's declared yet, for an earlier build to declare its own."""
    with isolated_settings(declared=False) as settings:
        yield settings


def _dramatiq_arguments(queue: str) -> dict[str, str]:
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{queue}.XQ"}


def _declare_like_an_earlier_build(settings: Settings) -> None:
    """The saga queues as dramatiq declared them, one unpartitioned stock queue; a command waiting
    in the payment queue and an old dead letter in the stock queue's dramatiq dead-letter queue."""
    with Connection(settings.amqp_url) as connection, connection.channel() as channel:
        for queue in (topology.ORDER_SAGA_QUEUE, topology.PAYMENT_QUEUE, "orderflow.inventory.stock"):
            channel.queue_declare(queue, durable=True, arguments=_dramatiq_arguments(queue))
            channel.queue_declare(f"{queue}.XQ", durable=True, arguments={"x-message-ttl": 604800000})
        channel.basic_publish(
            channel.prepare_message(b'{"waiting": true}'), exchange="", routing_key=topology.PAYMENT_QUEUE
        )
        channel.basic_publish(
            channel.prepare_message(b'{"dead": true}'),
            exchange="",
            routing_key="orderflow.inventory.stock.XQ",
        )


def _purge(settings: Settings, queue: str) -> None:
    with Connection(settings.amqp_url) as connection, connection.channel() as channel:
        channel.queue_purge(queue)


def test_a_worker_refuses_a_queue_declared_with_other_arguments(settings: Settings) -> None:
    _declare_like_an_earlier_build(settings)

    with Connection(settings.amqp_url) as connection, pytest.raises(topology.TopologyConflict) as refused:
        topology_of(settings).declare(connection)

    assert refused.value.queue == topology.ORDER_SAGA_QUEUE
    assert "orderflow topology upgrade" in str(refused.value)


def test_upgrade_redeclares_idle_queues_and_leaves_busy_ones_to_the_operator(settings: Settings) -> None:
    _declare_like_an_earlier_build(settings)

    first = cli(settings, "topology", "upgrade")

    assert first.returncode == 1, first.stderr
    assert f"declared {topology.ORDER_SAGA_QUEUE} anew" in first.stdout
    assert "deleted retired queue orderflow.inventory.stock\n" in first.stdout
    # Nobody consumes the payment queue (its pool is stopped): its command is set aside, the queue
    # declared anew, and the command put back for the new release's pool.
    assert f"declared {topology.PAYMENT_QUEUE} anew" in first.stdout
    assert f"kept the 1 message(s) of {topology.PAYMENT_QUEUE}" in first.stdout
    assert queue_messages(settings.amqp_url, topology.PAYMENT_QUEUE)[0][0] == b'{"waiting": true}'
    assert "left alone: retired queue orderflow.inventory.stock.XQ " in first.stderr
    assert queue_depth(settings.amqp_url, "orderflow.inventory.stock.XQ") == 1

    # The operator looks at what was left (here: purges it) and runs the upgrade again.
    _purge(settings, "orderflow.inventory.stock.XQ")
    second = cli(settings, "topology", "upgrade")

    assert second.returncode == 0, second.stderr
    assert "deleted retired queue orderflow.inventory.stock.XQ" in second.stdout
    with running("payment", settings, [topology.PAYMENT_QUEUE]):
        pass  # it starts and consumes
    third = cli(settings, "topology", "upgrade")
    assert (third.returncode, third.stdout.strip()) == (0, "the broker already matches this release")


def test_a_waiting_worker_starts_once_the_broker_is_upgraded(settings: Settings) -> None:
    _declare_like_an_earlier_build(settings)
    _purge(settings, topology.PAYMENT_QUEUE)
    _purge(settings, "orderflow.inventory.stock.XQ")

    with running("payment", settings, []):
        # It retries while the conflict lasts; the upgrade deletes the idle queues under it.
        assert cli(settings, "topology", "upgrade").returncode == 0
        wait_for(
            lambda: consumer_count(settings.amqp_url, topology.PAYMENT_QUEUE),
            timeout=45,
            what="the payment worker consuming after the upgrade",
        )


INTAKE_DLQ = topology.dead_letter_queue(topology.ORDER_INTAKE_QUEUE)


def _dead_letters_of_an_earlier_build(settings: Settings, count: int) -> list[tuple[bytes, dict[str, str]]]:
    """The intake's dead-letter queue as builds before its bounds declared it, holding dead letters."""
    letters = [(f"letter {i}".encode(), {"x-orderflow-reason": f"reason {i}"}) for i in range(count)]
    with Connection(settings.amqp_url) as connection, connection.channel() as channel:
        channel.queue_declare(INTAKE_DLQ, durable=True, auto_delete=False)
        for body, headers in letters:
            message = channel.prepare_message(body, None, None, None, headers, {"delivery_mode": 2})
            channel.basic_publish(message, exchange="", routing_key=INTAKE_DLQ)
    return letters


def test_upgrade_bounds_a_dead_letter_queue_and_keeps_its_dead_letters(settings: Settings) -> None:
    letters = _dead_letters_of_an_earlier_build(settings, 3)
    with Connection(settings.amqp_url) as connection, pytest.raises(topology.TopologyConflict) as refused:
        topology_of(settings).declare(connection)
    assert refused.value.queue == INTAKE_DLQ

    upgrade = cli(settings, "topology", "upgrade")

    assert upgrade.returncode == 0, upgrade.stderr
    assert f"declared {INTAKE_DLQ} anew" in upgrade.stdout
    assert f"kept the 3 dead letter(s) of {INTAKE_DLQ}" in upgrade.stdout
    with Connection(settings.amqp_url) as connection:
        topology_of(settings).declare(connection)  # no conflict left
    kept = [(body, dict(headers)) for body, headers in queue_messages(settings.amqp_url, INTAKE_DLQ)]
    assert [(body.encode() if isinstance(body, str) else body, h) for body, h in kept] == letters, "in order"
    assert consumer_count(settings.amqp_url, topology.set_aside_queue(INTAKE_DLQ)) == 0
    with Connection(settings.amqp_url) as connection, pytest.raises(NotFound):
        connection.channel().queue_declare(topology.set_aside_queue(INTAKE_DLQ), passive=True)


def test_upgrade_keeps_the_dead_letters_that_do_not_fit_the_new_bound_aside(settings: Settings) -> None:
    _dead_letters_of_an_earlier_build(settings, 3)
    bounded = Settings(**{**settings.model_dump(), "dead_letter_max_messages": 2})
    aside = topology.set_aside_queue(INTAKE_DLQ)

    first = cli(bounded, "topology", "upgrade")

    assert first.returncode == 1, first.stderr
    assert f"left alone: {aside} holds dead letters of {INTAKE_DLQ} that do not fit" in first.stderr
    assert (queue_depth(settings.amqp_url, INTAKE_DLQ), queue_depth(settings.amqp_url, aside)) == (2, 1)

    # The operator makes room (here: takes the two off), and runs the upgrade again.
    assert len(queue_messages(settings.amqp_url, INTAKE_DLQ)) == 2
    second = cli(bounded, "topology", "upgrade")

    assert second.returncode == 0, second.stderr
    assert f"kept the 1 dead letter(s) of {INTAKE_DLQ}" in second.stdout
    assert [body for body, _ in queue_messages(settings.amqp_url, INTAKE_DLQ)] in (
        [b"letter 2"],
        ["letter 2"],
    )


def test_upgrade_turns_classic_queues_into_quorum_ones_keeping_their_messages() -> None:
    """Quorum queues do not take RabbitMQ's atomic if-empty delete: the upgrade checks, then deletes,
    and keeps what the queues held (pools stopped)."""
    with isolated_settings(declared=False, queue_type="quorum") as settings:
        classic = replace(topology_of(settings), quorum=False)
        dead = topology.dead_letter_queue(topology.PAYMENT_QUEUE)
        with Connection(settings.amqp_url) as connection:
            classic.declare(connection)
            with connection.channel() as channel:
                for body in (b"first", b"second"):
                    channel.basic_publish(channel.prepare_message(body), exchange="", routing_key=dead)
                channel.basic_publish(
                    channel.prepare_message(b"a command"), exchange="", routing_key=topology.PAYMENT_QUEUE
                )

        upgrade = cli(settings, "topology", "upgrade")

        assert upgrade.returncode == 0, upgrade.stderr
        assert f"kept the 2 dead letter(s) of {dead}" in upgrade.stdout
        assert f"kept the 1 message(s) of {topology.PAYMENT_QUEUE}" in upgrade.stdout
        with Connection(settings.amqp_url) as connection:
            topology_of(settings).declare(connection)  # every queue is a quorum queue now
        assert [body for body, _ in queue_messages(settings.amqp_url, dead)] == [b"first", b"second"]
        assert [body for body, _ in queue_messages(settings.amqp_url, topology.PAYMENT_QUEUE)] == [
            b"a command"
        ]
