"""Where each saga message goes, and how messages travel there: as dramatiq messages, many per message.

A saga message travels as an argument of a dramatiq message for the actor named after its type
(`ReserveStock` -> `reserve_stock`). Messages of one type for one queue that a handler produced
together travel together, as the arguments of one dramatiq message (an envelope): a batch of
replies costs one publish, one delivery and one ack. One message alone is an envelope of one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import dramatiq

from shared.contracts import customers, requests, saga, support
from shared.contracts.base import Message, derive_id
from shared.messaging import topology

# The most saga messages one envelope carries, and the most bytes of them: an envelope is never
# much larger than ENVELOPE_BYTES (a message alone over it still travels, alone; the largest the
# contracts allow is about 16 KB), so it stays well under what RabbitMQ accepts
# (topology.BROKER_MAX_MESSAGE_BYTES).
ENVELOPE_LIMIT = 100
ENVELOPE_BYTES = 256 * 1024

# Which queue consumes each saga message; stock commands go to the partition they name.
ROUTES: dict[type[Message], str] = {
    saga.ChargePayment: topology.PAYMENT_QUEUE,
    saga.RefundPayment: topology.PAYMENT_QUEUE,
    saga.RefundAmount: topology.PAYMENT_QUEUE,
    saga.StockReserved: topology.ORDER_SAGA_QUEUE,
    saga.StockReservationFailed: topology.ORDER_SAGA_QUEUE,
    saga.StockReleased: topology.ORDER_SAGA_QUEUE,
    saga.StockReturned: topology.ORDER_SAGA_QUEUE,
    saga.StockStillHeld: topology.ORDER_SAGA_QUEUE,
    saga.PaymentCaptured: topology.ORDER_SAGA_QUEUE,
    saga.PaymentDeclined: topology.ORDER_SAGA_QUEUE,
    saga.PaymentFailed: topology.ORDER_SAGA_QUEUE,
    saga.PaymentRefunded: topology.ORDER_SAGA_QUEUE,
    saga.StepDeadline: topology.ORDER_SAGA_QUEUE,
    customers.UpdateCustomer: topology.ORDER_SAGA_QUEUE,
    customers.ForgetCustomer: topology.ORDER_SAGA_QUEUE,
    requests.OrderRequest: topology.ORDER_SAGA_QUEUE,
    requests.CaseSettled: topology.ORDER_SAGA_QUEUE,
    support.OpenCase: topology.ORDER_SAGA_QUEUE,
    support.ReplyCase: topology.ORDER_SAGA_QUEUE,
    support.CloseCase: topology.ORDER_SAGA_QUEUE,
    support.ApproveCase: topology.ORDER_SAGA_QUEUE,
}


def queue_of(message: Message) -> str:
    """The queue that consumes `message`."""
    if isinstance(message, saga.STOCK_COMMANDS):
        return topology.stock_queue(message.partition)
    return ROUTES[type(message)]


def home_queue(message_type: type[Message]) -> str:
    """The queue an actor is declared on (stock commands: the first partition's, nominally)."""
    if issubclass(message_type, saga.STOCK_COMMANDS):
        return topology.stock_queue(0)
    return ROUTES[message_type]


def actor_name(message_type: type[Message]) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", message_type.__name__).lower()


def envelopes(queue: str, messages: Sequence[Message]) -> list[dramatiq.Message]:
    """The dramatiq messages that carry `messages` (all of one type) to `queue`."""
    assert len({type(message) for message in messages}) == 1, "an envelope carries one type"
    actor = actor_name(type(messages[0]))
    carried: list[dramatiq.Message[Any]] = []
    for chunk, args in _chunks(messages):
        carried.append(
            dramatiq.Message(
                queue_name=queue,
                actor_name=actor,
                args=args,
                kwargs={},
                options={},
                # The same messages travel in an envelope of the same id, however often they are sent.
                message_id=chunk[0].message_id
                if len(chunk) == 1
                else derive_id(*(message.message_id for message in chunk)),
            )
        )
    return carried


def _chunks(messages: Sequence[Message]) -> list[tuple[Sequence[Message], tuple[Any, ...]]]:
    """`messages` cut into envelopes' worth, in order, each with its messages as JSON data."""
    chunks: list[tuple[Sequence[Message], tuple[Any, ...]]] = []
    start, size = 0, 0
    args: list[Any] = []
    for index, message in enumerate(messages):
        arg = message.model_dump(mode="json")
        # As dramatiq's JSON encoder writes it (ASCII: characters are bytes).
        length = len(json.dumps(arg, separators=(",", ":"))) + 1
        if args and (len(args) == ENVELOPE_LIMIT or size + length > ENVELOPE_BYTES):
            chunks.append((messages[start:index], tuple(args)))
            start, size, args = index, 0, []
        args.append(arg)
        size += length
    if args:
        chunks.append((messages[start:], tuple(args)))
    return chunks
