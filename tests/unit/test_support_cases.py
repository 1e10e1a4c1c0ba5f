"""Support cases as pure rules: opening, refusals, the conversation, approval and settlement."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.order.domain import Customer, Line, Order, OrderStatus
from services.order.support_domain import (
    Case,
    CaseLine,
    CaseStatus,
    EntryKind,
    open_case,
)
from shared.contracts.events import SupportEvent
from shared.contracts.intake import OrderLine
from shared.contracts.requests import CaseSettled, OrderRequest
from shared.contracts.support import OpenCase

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ALICE = Customer(customer_id="C-1", name="Alice", email="alice@example.com")


def order(status: str = "shipped", *lines: tuple[str, int]) -> Order:
    return Order(
        order_id="A-1",
        customer=ALICE,
        lines=[Line(sku=sku, quantity=quantity) for sku, quantity in (lines or [("SKU-1", 2), ("SKU-2", 1)])],
        payment_method="credit_card",
        currency="CNY",
        created_at=NOW,
        status=OrderStatus(status),
    )


def opening(kind: str = "question", message_id: str = "m-open", **fields: object) -> OpenCase:
    return OpenCase(
        message_id=message_id, order_id="A-1", case_id="case-1", kind=kind, text="Where is it?", **fields
    )


def lines(*pairs: tuple[str, int]) -> list[OrderLine]:
    return [OrderLine(sku=sku, quantity=quantity) for sku, quantity in pairs]


def opened(kind: str = "return", **fields: object) -> Case:
    case = open_case(opening(kind, **fields), order(), NOW)
    assert case.status is CaseStatus.OPEN
    return case


def test_a_question_opens_and_tells_the_customer() -> None:
    case = open_case(opening(), order("confirmed"), NOW)

    assert (case.status, case.reason, case.returned) == (CaseStatus.OPEN, None, [])
    (event,) = case.said_for("m-open")
    assert isinstance(event, SupportEvent)
    assert (event.type, event.case_id, event.order_id, event.kind, event.status, event.text) == (
        "support.opened",
        "case-1",
        "A-1",
        "question",
        "open",
        "Where is it?",
    )
    assert event.customer is not None and event.customer.email == "alice@example.com"


def test_what_an_entry_implies_is_the_same_each_time_it_is_said() -> None:
    case = open_case(opening(), order(), NOW)
    assert case.said_for("m-open") == case.said_for("m-open")
    case.reply("m-reply", "On its way", NOW)
    assert (
        case.said_for("m-open")[0].model_dump()
        == open_case(opening(), order(), NOW).said_for("m-open")[0].model_dump()
    )


def test_a_return_without_lines_takes_back_all_of_the_order() -> None:
    case = opened("return")
    assert case.returned == [CaseLine("SKU-1", 2), CaseLine("SKU-2", 1)]


@pytest.mark.parametrize("status", ["pending", "confirmed", "cancelled"])
def test_a_return_of_an_order_that_was_not_shipped_is_refused(status: str) -> None:
    case = open_case(opening("return"), order(status), NOW)

    assert (case.status, case.reason) == (CaseStatus.REFUSED, "not_shipped")
    refusal = case.refusal_of("m-open")
    assert refusal is not None and f"order A-1 is {status}" in (refusal.text or "")
    assert case.said_for("m-open") == []


def test_a_completed_order_can_be_returned() -> None:
    assert open_case(opening("return"), order("completed"), NOW).status is CaseStatus.OPEN


def test_a_case_about_an_unknown_order_is_refused() -> None:
    case = open_case(opening(), None, NOW)
    assert (case.status, case.reason, case.customer) == (CaseStatus.REFUSED, "unknown_order", None)


@pytest.mark.parametrize(
    ("returned", "reason"),
    [
        (lines(("SKU-1", 3)), "too_many_units"),
        (lines(("SKU-1", 1), ("SKU-1", 2)), "too_many_units"),  # added up per SKU
        (lines(("SKU-9", 1)), "not_in_order"),
    ],
)
def test_a_return_of_more_than_the_order_holds_is_refused(returned: list[OrderLine], reason: str) -> None:
    case = open_case(opening("return", returned=returned), order(), NOW)
    assert (case.status, case.reason) == (CaseStatus.REFUSED, reason)


def test_an_exchange_names_a_replacement() -> None:
    refused = open_case(opening("exchange", returned=lines(("SKU-1", 1))), order(), NOW)
    assert refused.reason == "no_replacement"
    case = opened("exchange", returned=lines(("SKU-1", 1)), replacement=lines(("SKU-3", 1)))
    assert (case.returned, case.replacement) == ([CaseLine("SKU-1", 1)], [CaseLine("SKU-3", 1)])


def test_a_reply_answers_the_case_and_tells_the_customer() -> None:
    case = opened("question")
    case.reply("m-reply", "It left yesterday", NOW)

    assert case.status is CaseStatus.ANSWERED
    (event,) = case.said_for("m-reply")
    assert (event.type, event.status, event.text) == ("support.answered", "answered", "It left yesterday")


def test_closing_tells_the_customer_and_a_closed_case_takes_nothing_more() -> None:
    case = opened("question")
    case.close("m-close", "Glad to help", NOW)
    assert case.status is CaseStatus.CLOSED
    (event,) = case.said_for("m-close")
    assert (event.type, event.status, event.text) == ("support.closed", "closed", "Glad to help")

    case.reply("m-late", "One more thing", NOW)
    case.close("m-again", None, NOW)
    assert (case.status, case.reason) == (CaseStatus.CLOSED, "closed")
    assert [entry.kind for entry in case.conversation] == [
        EntryKind.OPENED,
        EntryKind.CLOSED,
        EntryKind.REFUSED,
        EntryKind.REFUSED,
    ]
    assert case.said_for("m-late") == case.said_for("m-again") == []


def test_approving_a_return_asks_the_order_to_carry_it_out() -> None:
    case = opened("return", returned=lines(("SKU-1", 1)))
    case.approve("m-approve", order(), NOW)

    assert case.status is CaseStatus.APPROVED
    (request,) = case.said_for("m-approve")
    assert isinstance(request, OrderRequest)
    assert (request.order_id, request.kind, request.case_id, request.returned) == (
        "A-1",
        "return",
        "case-1",
        lines(("SKU-1", 1)),
    )
    assert request.message_id == case.said_for("m-approve")[0].message_id  # a redelivery asks again alike


def test_an_approval_is_refused_for_a_question_twice_or_an_order_no_longer_returnable() -> None:
    question = opened("question")
    question.approve("m-approve", order(), NOW)
    assert (question.status, question.reason) == (CaseStatus.OPEN, "not_a_return")

    case = opened("return")
    case.approve("m-approve", order("cancelled"), NOW)
    assert (case.status, case.reason) == (CaseStatus.OPEN, "not_shipped")
    case.approve("m-approve-2", order(), NOW)
    case.approve("m-approve-3", order(), NOW)
    assert (case.status, case.reason) == (CaseStatus.APPROVED, "already_approved")


def test_an_approved_case_cannot_be_closed_by_hand_but_can_be_answered() -> None:
    case = opened("return")
    case.approve("m-approve", order(), NOW)
    case.close("m-close", None, NOW)
    assert (case.status, case.reason) == (CaseStatus.APPROVED, "in_progress")
    case.reply("m-reply", "We are on it", NOW)
    assert (case.status, case.reason) == (CaseStatus.APPROVED, None)


def settlement(outcome: str = "done", amount: str | None = "25.00", reason: str | None = None) -> CaseSettled:
    return CaseSettled(
        message_id=f"m-settled-{outcome}",
        order_id="A-1",
        case_id="case-1",
        outcome=outcome,
        amount=amount,
        reason=reason,
    )


def test_a_done_return_closes_the_case_saying_what_was_refunded() -> None:
    case = opened("return", returned=lines(("SKU-1", 2)))
    case.approve("m-approve", order(), NOW)

    assert case.settled(settlement(), NOW)
    assert case.status is CaseStatus.CLOSED
    (event,) = case.said_for("m-settled-done")
    assert (event.type, event.text) == ("support.closed", "Returned 2 x SKU-1; refunded 25.00 CNY.")


def test_a_refused_return_opens_the_case_again_with_the_reason() -> None:
    case = opened("return")
    case.approve("m-approve", order(), NOW)

    assert case.settled(settlement("refused", None, "out_of_stock"), NOW)
    assert (case.status, case.reason) == (CaseStatus.OPEN, "out_of_stock")
    case.approve("m-approve-again", order(), NOW)
    first, second = (case.said_for(m)[0].message_id for m in ("m-approve", "m-approve-again"))
    assert first != second  # a new request, not a duplicate of the refused one


def test_a_settlement_the_case_does_not_wait_for_changes_nothing() -> None:
    case = opened("return")
    assert not case.settled(settlement(), NOW)
    assert (case.status, len(case.conversation)) == (CaseStatus.OPEN, 1)


@pytest.mark.parametrize(
    ("amount", "money"),
    [
        ("0.00", "no money moved"),
        (None, "no money moved"),
        ("5.00", "charged 5.00 CNY"),
        ("-5.00", "refunded 5.00 CNY"),
    ],
)
def test_an_exchange_note_says_which_way_the_difference_went(amount: str | None, money: str) -> None:
    case = opened("exchange", returned=lines(("SKU-1", 1)), replacement=lines(("SKU-3", 1)))
    assert case.settlement_note(amount) == f"Exchanged 1 x SKU-1 for 1 x SKU-3; {money}."
