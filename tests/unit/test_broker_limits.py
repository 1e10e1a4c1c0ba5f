"""The broker's message size limit fits every legitimate message with room, and every config agrees."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from shared.contracts import saga
from shared.contracts.base import Message
from shared.contracts.intake import MAX_LINES, MAX_UNITS_PER_SKU
from shared.messaging import routes, topology
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
LONGEST_ID = "A" * 64
BIG_AMOUNT = 10**15  # minor units: far more than any price times any quantity


def skus() -> list[str]:
    return [f"{i:03d}".ljust(64, "S") for i in range(MAX_LINES)]


def order_id(n: int) -> str:
    return f"{LONGEST_ID[:-4]}{n:04d}"


def largest_batches() -> dict[str, list[Message]]:
    """A full batch of each of the bulkiest saga messages, every field as long as the contracts allow."""
    return {
        "StockReserved": [
            saga.StockReserved(
                message_id=LONGEST_ID,
                order_id=order_id(n),
                partition=63,
                lines=[
                    saga.PricedLine(
                        sku=sku,
                        quantity=MAX_UNITS_PER_SKU,
                        unit_price=BIG_AMOUNT,
                        line_total=BIG_AMOUNT * MAX_UNITS_PER_SKU,
                    )
                    for sku in skus()
                ],
                total=BIG_AMOUNT * MAX_UNITS_PER_SKU * MAX_LINES,
            )
            for n in range(routes.ENVELOPE_LIMIT)
        ],
        "ReserveStock": [
            saga.ReserveStock(
                message_id=LONGEST_ID,
                order_id=order_id(n),
                partition=63,
                lines=[saga.StockLine(sku=sku, quantity=MAX_UNITS_PER_SKU) for sku in skus()],
            )
            for n in range(routes.ENVELOPE_LIMIT)
        ],
        "StockReservationFailed": [
            saga.StockReservationFailed(
                message_id=LONGEST_ID, order_id=order_id(n), partition=63, reason="unknown_sku", skus=skus()
            )
            for n in range(routes.ENVELOPE_LIMIT)
        ],
    }


def test_the_largest_saga_envelope_stays_under_a_quarter_of_the_broker_limit() -> None:
    for kind, messages in largest_batches().items():
        envelopes = routes.envelopes(routes.queue_of(messages[0]), messages)
        sizes = [len(envelope.encode()) for envelope in envelopes]
        assert max(sizes) <= routes.ENVELOPE_BYTES + 1024, (kind, sizes)
        assert max(sizes) * 4 <= topology.BROKER_MAX_MESSAGE_BYTES, (kind, sizes)
        carried = [arg["order_id"] for envelope in envelopes for arg in envelope.args]
        assert carried == [m.order_id for m in messages], f"{kind}: every message once, in order"
        assert len(envelopes) > 1, f"{kind}: a batch this large travels in several envelopes"


def test_small_messages_still_travel_a_hundred_to_an_envelope() -> None:
    replies = [saga.StockReleased(order_id=order_id(n)) for n in range(250)]
    envelopes = routes.envelopes(topology.ORDER_SAGA_QUEUE, replies)
    assert [len(envelope.args) for envelope in envelopes] == [100, 100, 50]
    again = routes.envelopes(topology.ORDER_SAGA_QUEUE, replies)
    assert [e.message_id for e in envelopes] == [e.message_id for e in again], "the same ids when sent again"


def test_the_intake_limit_is_well_under_the_broker_limit() -> None:
    assert Settings().max_message_bytes * 16 <= topology.BROKER_MAX_MESSAGE_BYTES


def test_every_broker_configuration_sets_the_same_limit() -> None:
    conf = (ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text()
    (value,) = re.findall(r"^max_message_size\s*=\s*(\d+)\s*$", conf, re.MULTILINE)
    assert int(value) == topology.BROKER_MAX_MESSAGE_BYTES
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    nodes = [s for s in compose["services"].values() if s.get("image", "").startswith("rabbitmq:")]
    assert len(nodes) == 3
    for node in nodes:
        assert "./deploy/rabbitmq/rabbitmq.conf:/etc/rabbitmq/conf.d/20-orderflow.conf:ro" in node["volumes"]
    services = (ROOT / "scripts" / "services.sh").read_text()
    assert 'RABBITMQ_CONF="$PWD/deploy/rabbitmq/rabbitmq.conf"' in services
    assert "install_rabbitmq_config\n" in services and "apply_rabbitmq_config\n" in services


def test_dead_letter_queues_are_bounded_and_refuse_when_full() -> None:
    arguments = topology.Topology().dead_letter_queue_arguments()
    settings = Settings()
    assert arguments == {
        "x-max-length": settings.dead_letter_max_messages,
        "x-max-length-bytes": settings.dead_letter_max_bytes,
        "x-overflow": "reject-publish",
    }
