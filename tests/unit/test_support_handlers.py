"""Support desk use cases with fakes: redelivered commands apply once, unknown cases are rejected,
a case another writer changed is decided again on its new state."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest

from services.order.domain import Customer, Line, Order, OrderStatus
from services.order.support_domain import Case, CaseStatus
from services.order.support_handlers import SupportHandlers
from shared.contracts.requests import CaseSettled, OrderRequest
from shared.contracts.support import ApproveCase, CloseCase, OpenCase, ReplyCase
from tests.unit.fakes import FakeOrders, Recorder, batch

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeCases:
    """Cases in memory, with the store's contract: a change is written only from the version it
    was read at. `meddle`, if set, changes a case behind the handler's back once, before a save."""

    def __init__(self) -> None:
        self.cases: dict[str, Case] = {}
        self.meddle: tuple[str, str] | None = None

    def add(self, cases: list[Case]) -> set[str]:
        taken = {case.case_id for case in cases if case.case_id in self.cases}
        for case in cases:
            self.cases.setdefault(case.case_id, copy.deepcopy(case))
        return taken

    def refresh(self, case_ids: Iterable[str]) -> dict[str, Case]:
        return {i: copy.deepcopy(self.cases[i]) for i in case_ids if i in self.cases}

    def save(self, cases: list[Case]) -> list[Case]:
        if self.meddle is not None:
            case_id, text = self.meddle
            self.meddle = None
            self.cases[case_id].reply("m-meddler", text, NOW)
            self.cases[case_id].version += 1
        lost = [case for case in cases if self.cases[case.case_id].version != case.version]
        for case in cases:
            if all(case is not loser for loser in lost):
                case.version += 1
                self.cases[case.case_id] = copy.deepcopy(case)
        return lost


@pytest.fixture
def cases() -> FakeCases:
    return FakeCases()


@pytest.fixture
def outbox() -> Recorder:
    return Recorder()


@pytest.fixture
def desk(cases: FakeCases, outbox: Recorder) -> SupportHandlers:
    orders = FakeOrders()
    orders.add(
        [
            Order(
                order_id=order_id,
                customer=Customer(customer_id="C-1", name="Alice", email="alice@example.com"),
                lines=[Line(sku="SKU-1", quantity=2)],
                payment_method="credit_card",
                currency="CNY",
                created_at=NOW,
                status=OrderStatus(status),
            )
            for order_id, status in (("A-SHIPPED", "shipped"), ("A-CONFIRMED", "confirmed"))
        ]
    )
    return SupportHandlers(cases, orders, outbox, outbox, clock=lambda: NOW)


def open_one(desk: SupportHandlers, kind: str = "return", order_id: str = "A-SHIPPED") -> OpenCase:
    command = OpenCase(message_id="m-open", order_id=order_id, case_id="case-1", kind=kind, text="Too small")
    desk.open_cases(batch(command))
    return command


def test_a_redelivered_opening_opens_one_case_and_says_the_same_event(
    desk: SupportHandlers, cases: FakeCases, outbox: Recorder
) -> None:
    command = open_one(desk)
    desk.open_cases(batch(command))
    desk.open_cases(batch(command, command))

    assert [case.status for case in cases.cases.values()] == [CaseStatus.OPEN]
    assert len(cases.cases["case-1"].conversation) == 1
    assert outbox.kinds() == ["support.opened"] * 4
    assert len({event.event_id for event in outbox.published}) == 1


def test_another_opening_under_a_taken_case_id_is_rejected(desk: SupportHandlers, cases: FakeCases) -> None:
    open_one(desk)
    other = OpenCase(message_id="m-other", order_id="A-SHIPPED", case_id="case-1", kind="question", text="?")
    received = batch(other)
    desk.open_cases(received)
    assert received.reason_rejected(other) == "case case-1 exists already, opened by another message"
    assert cases.cases["case-1"].kind == "return"


def test_a_refused_opening_is_recorded_and_says_nothing(
    desk: SupportHandlers, cases: FakeCases, outbox: Recorder
) -> None:
    open_one(desk, order_id="A-CONFIRMED")
    assert (cases.cases["case-1"].status, cases.cases["case-1"].reason) == (CaseStatus.REFUSED, "not_shipped")
    assert outbox.kinds() == []


def test_a_redelivered_reply_answers_once(desk: SupportHandlers, cases: FakeCases, outbox: Recorder) -> None:
    open_one(desk)
    reply = ReplyCase(message_id="m-reply", order_id="A-SHIPPED", case_id="case-1", text="Send it back")
    desk.reply_cases(batch(reply, reply))
    desk.reply_cases(batch(reply))

    assert [entry.kind for entry in cases.cases["case-1"].conversation] == ["opened", "replied"]
    answered = [event for event in outbox.published if event.type == "support.answered"]
    assert len(answered) == 2 and len({event.event_id for event in answered}) == 1


def test_a_command_for_an_unknown_case_is_rejected(desk: SupportHandlers) -> None:
    close = CloseCase(message_id="m-close", order_id="A-SHIPPED", case_id="case-404")
    received = batch(close)
    desk.close_cases(received)
    assert "unknown case case-404" in (received.reason_rejected(close) or "")


def test_an_approval_asks_the_order_once_and_its_settlement_closes_the_case(
    desk: SupportHandlers, cases: FakeCases, outbox: Recorder
) -> None:
    open_one(desk)
    approve = ApproveCase(message_id="m-approve", order_id="A-SHIPPED", case_id="case-1")
    desk.approve_cases(batch(approve))
    desk.approve_cases(batch(approve))

    requests = [message for message in outbox.sent if isinstance(message, OrderRequest)]
    assert len(requests) == 2 and requests[0] == requests[1]
    assert cases.cases["case-1"].status is CaseStatus.APPROVED

    settled = CaseSettled(
        message_id="m-done", order_id="A-SHIPPED", case_id="case-1", outcome="done", amount="25.00"
    )
    desk.cases_settled(batch(settled))
    desk.cases_settled(batch(settled))
    case = cases.cases["case-1"]
    assert case.status is CaseStatus.CLOSED
    assert [entry.kind for entry in case.conversation] == ["opened", "approved", "closed"]
    closed = [event for event in outbox.published if event.type == "support.closed"]
    assert {event.text for event in closed} == {"Returned 2 x SKU-1; refunded 25.00 CNY."}


def test_a_case_changed_by_another_writer_is_decided_again_on_its_new_state(
    desk: SupportHandlers, cases: FakeCases, outbox: Recorder
) -> None:
    open_one(desk, kind="question")
    cases.meddle = ("case-1", "Another agent's answer")
    desk.close_cases(
        batch(CloseCase(message_id="m-close", order_id="A-SHIPPED", case_id="case-1", note="Bye"))
    )

    case = cases.cases["case-1"]
    assert [entry.message_id for entry in case.conversation] == ["m-open", "m-meddler", "m-close"]
    assert case.status is CaseStatus.CLOSED
    assert outbox.kinds() == ["support.opened", "support.closed"]
