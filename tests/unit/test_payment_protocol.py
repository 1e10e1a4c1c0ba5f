"""The payment protocol as a whole, explored by hypothesis: the order saga and the payment worker
talk over a network that delays, reorders and duplicates messages, to a gateway that loses
replies, fails and recovers at random. Whatever happens, once everything has settled the money on
the gateway's own ledger equals the confirmed totals: each confirmed order holds its total, each
cancelled one nothing; the payment worker's ledger has each capture, refund and void the gateway
made, once; and on the way, the gateway never holds more than an order's total."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from services.order.domain import OrderStatus
from services.order.handlers import OrderHandlers
from services.order.intake import decode_submission
from services.payment.handlers import PaymentHandlers
from services.payment.ledger import EntryKind
from shared.contracts import saga
from shared.contracts.base import Message, derive_id
from shared.contracts.events import Event
from shared.errors import TransientError
from shared.messaging.ports import Batch
from tests.unit.factories import body, submission
from tests.unit.fakes import FakeGateway, FakeLedger, FakeOrders, FakePayments, FakeQueues

UNIT_PRICE = 250
FAULTS = ("unavailable", "lost_reply")


class Network:
    """What the handlers send, in flight until the test delivers it, in any order, maybe twice."""

    def __init__(self) -> None:
        self.in_flight: list[Message] = []
        self.events: list[Event] = []

    def send(self, message: Message, delay: timedelta | None = None) -> None:
        self.in_flight.append(message)

    def publish(self, event: Event) -> None:
        self.events.append(event)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class PaymentProtocol(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.network = Network()
        self.orders = FakeOrders()
        self.payments = FakePayments()
        self.ledger = FakeLedger()
        self.gateway = FakeGateway(fault=self._fault)
        self.fault_rate = 0.0
        self.random = random.Random(0)
        self.order_handlers = OrderHandlers(
            self.orders, self.network, self.network, FakeQueues(), currency="CNY", clock=self.clock
        )
        self.payment_handlers = PaymentHandlers(
            self.payments,
            {"credit_card": self.gateway},
            self.network,
            ledger=self.ledger,
            attempts=1,  # every failed call leaves the charge in doubt, or resolved by asking
            backoff_seconds=0,
            clock=self.clock,
            sleep=lambda seconds: None,
        )
        self.submitted = 0

    def _fault(self, operation: str) -> str | None:
        if self.random.random() >= self.fault_rate:
            return None
        return "unavailable" if operation == "lookup" else self.random.choice(FAULTS)

    # What can happen --------------------------------------------------------------------------

    @initialize(rate=st.sampled_from([0.0, 0.3, 0.7, 1.0]), seed=st.integers(0, 2**16))
    def weather_at_first(self, rate: float, seed: int) -> None:
        self.gateway_weather(rate, seed)

    @rule(declined=st.booleans(), units=st.integers(1, 3))
    def submit(self, declined: bool, units: int) -> None:
        self.submitted += 1
        order = submission(
            f"A-{self.submitted}", ("SKU-1", units), token="tok_declined" if declined else "tok_visa"
        )
        self.order_handlers.submit_orders(Batch([decode_submission(body(order), "application/json", 65536)]))
        self.order_handlers.flush_timers()

    @rule(rate=st.sampled_from([0.0, 0.3, 0.7, 1.0]), seed=st.integers(0, 2**16))
    def gateway_weather(self, rate: float, seed: int) -> None:
        self.fault_rate, self.random = rate, random.Random(seed)

    @precondition(lambda self: self.network.in_flight)
    @rule(data=st.data(), again=st.booleans())
    def deliver(self, data: Any, again: bool) -> None:
        """One message, any of those in flight; kept for a second delivery if `again`."""
        index = data.draw(st.integers(0, len(self.network.in_flight) - 1))
        message = self.network.in_flight[index] if again else self.network.in_flight.pop(index)
        self._handle(message)

    # Checks -----------------------------------------------------------------------------------

    @invariant()
    def the_gateway_never_holds_more_than_an_order_total(self) -> None:
        for order_id, amount in self.gateway.charges.items():
            assert 0 <= self.gateway.held(order_id) <= amount

    def teardown(self) -> None:
        """The weather clears and time passes: everything in flight is delivered (timers fire),
        until nothing is under way or outstanding. Then the money must be exactly right."""
        self.fault_rate = 0.0
        for _ in range(5000):
            if not self.network.in_flight:
                break
            self._handle(self.network.in_flight.pop(0))
        orders = self.orders.orders.values()
        assert not self.network.in_flight, "the protocol did not settle"
        assert all(order.status is not OrderStatus.PENDING and not order.has_dues for order in orders)
        for order in orders:
            expected = order.total if order.status is OrderStatus.CONFIRMED else 0
            assert self.gateway.held(order.order_id) == expected, (order.order_id, order.status, order.reason)
        gateway = self.gateway
        assert self.ledger.amounts(EntryKind.CAPTURE) == {f"ch_{k}": v for k, v in gateway.charges.items()}
        assert self.ledger.amounts(EntryKind.REFUND) == {f"re_{k}": v for k, v in gateway.refunds.items()}
        # A void moves no money: the ledger never has one the provider did not make, but one whose
        # answer was lost, and that no later call revealed (the issuer declined the next charge
        # before the provider looked at the key), is not on our books.
        voided = {key for key, kind in gateway.keys.items() if kind == "void"}
        assert set(self.ledger.amounts(EntryKind.VOID)) <= voided

    # The participants -------------------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        try:
            self._route(message)
        except TransientError:
            self.network.in_flight.append(message)  # redelivered later
        self.order_handlers.flush_timers()

    def _route(self, message: Message) -> None:
        order, payment = self.order_handlers, self.payment_handlers
        match message:
            case saga.StepDeadline():
                self.clock.now += timedelta(minutes=10)  # it fires: its time has come
                order.step_deadlines(Batch([message]))
            case saga.ChargePayment():
                payment.charge_payment(Batch([message]))
            case saga.RefundPayment():
                payment.refund_payment(Batch([message]))
            case saga.ReserveStock():
                lines = [
                    saga.PricedLine(
                        sku=line.sku,
                        quantity=line.quantity,
                        unit_price=UNIT_PRICE,
                        line_total=UNIT_PRICE * line.quantity,
                    )
                    for line in message.lines
                ]
                reply = saga.StockReserved(
                    message_id=derive_id(message.order_id, "stock-reserved"),  # as inventory does
                    order_id=message.order_id,
                    lines=lines,
                    total=sum(line.line_total for line in lines),
                )
                self.network.send(reply)
            case saga.ReleaseStock():
                self.network.send(
                    saga.StockReleased(
                        message_id=derive_id(message.order_id, "stock-released"), order_id=message.order_id
                    )
                )
            case saga.CommitStock():
                pass  # sold; nothing answers a commit
            case _:
                handler = getattr(order, _handler_name(type(message).__name__))
                handler(Batch([message]))


def _handler_name(kind: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in kind).lstrip("_")


PaymentProtocol.TestCase.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestPaymentProtocol = PaymentProtocol.TestCase
