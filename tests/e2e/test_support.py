"""The support desk end to end: cases opened, answered, approved and closed through the CLI, decided
by the order worker, the customer told by email; refusals, unknown ids and redelivered commands."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from shared.contracts.support import ApproveCase, CloseCase, OpenCase, ReplyCase
from tests.e2e.test_order_requests import ledger, the_event
from tests.support import unique, wait_for
from tests.system import System, new_order


def confirmed_order(system: System) -> dict[str, Any]:
    sku = unique("MUG")
    system.stock(sku, 10, price="12.50")
    order = new_order((sku, 2))
    system.submit(order)
    assert system.outcome(order["order_id"])["status"] == "confirmed"
    return order


def case_of(system: System, case_id: str) -> dict[str, Any]:
    return system.cli_json("support", "show", case_id)


def listed(system: System, case_id: str, *options: str) -> dict[str, Any] | None:
    return next((c for c in system.cli_json("support", "list", *options) if c["case_id"] == case_id), None)


def support_events(system: System, order_id: str) -> list[dict[str, Any]]:
    return [e for e in system.events.of(order_id) if e["type"].startswith("support.")]


def subjects(system: System, email: str) -> list[str]:
    return [message["Subject"] for message in system.emails_to(email)]


def test_a_question_is_opened_answered_and_closed_and_the_customer_hears_of_each(system: System) -> None:
    order = confirmed_order(system)
    order_id, email = order["order_id"], order["customer"]["email"]

    case_id = system.cli(
        "support", "open", order_id, "--kind", "question", "--text", "Where is it?"
    ).stdout.strip()
    assert re.fullmatch(r"case-[0-9a-f]{12}", case_id)
    summary = listed(system, case_id, "--open")
    assert summary is not None
    assert (summary["order_id"], summary["kind"], summary["status"]) == (order_id, "question", "open")

    assert system.cli("support", "reply", case_id, "--text", "It ships tomorrow").stdout.strip() == (
        f"{case_id}: answered"
    )
    assert (
        system.cli("support", "close", case_id, "--note", "Glad to help").stdout.strip()
        == f"{case_id}: closed"
    )

    case = case_of(system, case_id)
    assert (case["status"], case["customer"]["email"]) == ("closed", email)
    assert [(e["kind"], e["status"], e["text"]) for e in case["conversation"]] == [
        ("opened", "open", "Where is it?"),
        ("replied", "answered", "It ships tomorrow"),
        ("closed", "closed", "Glad to help"),
    ]
    assert listed(system, case_id, "--open") is None
    assert (listed(system, case_id) or {}).get("status") == "closed"

    events = wait_for(lambda: len(support_events(system, order_id)) >= 3 and support_events(system, order_id))
    assert sorted((e["type"], e["case_id"], e["status"], e["text"]) for e in events) == [
        ("support.answered", case_id, "answered", "It ships tomorrow"),
        ("support.closed", case_id, "closed", "Glad to help"),
        ("support.opened", case_id, "open", "Where is it?"),
    ]
    assert all(e["customer"]["email"] == email for e in events)
    wait_for(lambda: len(system.emails_to(email)) >= 4, what="the confirmation and three support emails")
    assert sorted(subjects(system, email)) == [
        f"Re: your question about order {order_id}",
        f"We have your question about order {order_id}",
        f"Your order {order_id} is confirmed",
        f"Your question about order {order_id} is closed",
    ]
    (answer,) = (m for m in system.emails_to(email) if m["Subject"].startswith("Re: "))
    body = answer.get_payload(decode=True).decode()
    assert "It ships tomorrow" in body and case_id in body


def test_open_prints_the_case_as_json(system: System) -> None:
    order = confirmed_order(system)
    case = system.cli_json("support", "open", order["order_id"], "--kind", "question", "--text", "Gift wrap?")
    assert (case["order_id"], case["kind"], case["status"], case["text"]) == (
        order["order_id"],
        "question",
        "open",
        "Gift wrap?",
    )
    assert case_of(system, case["case_id"])["conversation"][0]["kind"] == "opened"


def test_a_return_of_an_unshipped_order_is_refused_with_the_reason(system: System) -> None:
    order = confirmed_order(system)
    order_id, email = order["order_id"], order["customer"]["email"]

    refused = system.cli("support", "open", order_id, "--kind", "return", "--text", "Too big", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "refused (not_shipped)" in refused.stderr
    assert f"order {order_id} is confirmed" in refused.stderr
    (case_id,) = re.findall(r"case-[0-9a-f]{12}", refused.stderr)
    case = case_of(system, case_id)
    assert (case["status"], case["reason"]) == ("refused", "not_shipped")
    assert case["returned"] == order["items"]  # what was asked: all of the order, by default
    assert listed(system, case_id, "--open") is None

    # Whatever the refusal said went out before the question after it, which the customer hears of.
    question = system.cli("support", "open", order_id, "--kind", "question", "--text", "Can I return it?")
    question_id = question.stdout.strip()
    wait_for(lambda: support_events(system, order_id), what="the question's support.opened")
    assert [(e["type"], e["case_id"]) for e in support_events(system, order_id)] == [
        ("support.opened", question_id)
    ]
    wait_for(lambda: len(system.emails_to(email)) >= 2, what="the question's email")
    assert sorted(subjects(system, email)) == [
        f"We have your question about order {order_id}",
        f"Your order {order_id} is confirmed",
    ]


def test_refusals_on_a_case_leave_it_as_it_was_and_say_why(system: System) -> None:
    order = confirmed_order(system)
    case_id = system.cli(
        "support", "open", order["order_id"], "--kind", "question", "--text", "Hi"
    ).stdout.strip()

    approve = system.cli("support", "approve", case_id, check=False)
    assert approve.returncode == 1
    assert "refused (not_a_return)" in approve.stderr
    case = case_of(system, case_id)
    assert (case["status"], case["reason"]) == ("open", "not_a_return")

    system.cli("support", "close", case_id)
    for args in (("close", case_id), ("reply", case_id, "--text", "One more thing")):
        late = system.cli("support", *args, check=False)
        assert late.returncode == 1
        assert "refused (closed)" in late.stderr
    assert case_of(system, case_id)["status"] == "closed"


def test_unknown_orders_and_cases_are_refused(system: System) -> None:
    ghost = unique("GHOST")
    result = system.cli("support", "open", ghost, "--kind", "question", "--text", "Hello?", check=False)
    assert result.returncode == 1
    assert f"refused (unknown_order): unknown order {ghost}" in result.stderr

    for args in (("show", "case-000000000000"), ("reply", "case-000000000000", "--text", "Hi")):
        result = system.cli("support", *args, check=False)
        assert (result.returncode, result.stderr.strip()) == (1, "orderflow: unknown case: case-000000000000")
    for args in (("close", "case-000000000000"), ("approve", "case-000000000000")):
        assert system.cli("support", *args, check=False).returncode == 1


def test_bad_lines_are_usage_errors(system: System) -> None:
    order = confirmed_order(system)
    for options in (
        ("--kind", "exchange", "--lines", '[{"sku": "X", "quantity": 1}]'),
        ("--kind", "return", "--lines", "[{]"),
        ("--kind", "return", "--lines", '[{"sku": "X", "quantity": "1"}]'),
        ("--kind", "question", "--lines", '[{"sku": "X", "quantity": 1}]'),
    ):
        result = system.cli("support", "open", order["order_id"], *options, "--text", "x", check=False)
        assert result.returncode == 2, (options, result.stderr)


def applied(system: System, case_id: str, message_id: str) -> dict[str, Any] | None:
    """The case, once it shows the message applied."""
    shown = system.cli("support", "show", case_id, "--json", check=False)
    if shown.returncode != 0:
        return None
    case: dict[str, Any] = json.loads(shown.stdout)
    return case if any(e["message_id"] == message_id for e in case["conversation"]) else None


def deliver_twice(system: System, command: OpenCase | ReplyCase | CloseCase | ApproveCase) -> None:
    """Send a command through the bus, wait for its case to show it applied, then send the very
    same message again, as RabbitMQ redelivers one whose ack was lost."""
    system.publish.saga(command)
    wait_for(lambda: applied(system, command.case_id, command.message_id), what=f"{type(command).__name__}")
    system.publish.saga(command)


def test_each_redelivered_command_applies_once(system: System) -> None:
    order = confirmed_order(system)
    order_id, email = order["order_id"], order["customer"]["email"]
    case_id = f"case-{uuid.uuid4().hex[:12]}"
    commands = [
        OpenCase(order_id=order_id, case_id=case_id, kind="question", text="Twice?"),
        ReplyCase(order_id=order_id, case_id=case_id, text="Once."),
        CloseCase(order_id=order_id, case_id=case_id, note="Done."),
    ]
    for command, event_type in zip(
        commands, ("support.opened", "support.answered", "support.closed"), strict=True
    ):
        deliver_twice(system, command)
        # The second delivery changes nothing, and says again, alike, what the first said.
        said = wait_for(
            lambda t=event_type: (
                len(sent := [e for e in support_events(system, order_id) if e["type"] == t]) >= 2 and sent
            ),
            what=f"{event_type} said again",
        )
        assert len({e["event_id"] for e in said}) == 1

    case = case_of(system, case_id)
    assert [e["message_id"] for e in case["conversation"]] == [c.message_id for c in commands]
    assert case["status"] == "closed"
    wait_for(lambda: len(system.emails_to(email)) >= 4, what="the support emails")
    assert sorted(subjects(system, email)) == sorted(
        [
            f"Your order {order_id} is confirmed",
            f"We have your question about order {order_id}",
            f"Re: your question about order {order_id}",
            f"Your question about order {order_id} is closed",
        ]
    )


def shipped_order(system: System) -> tuple[dict[str, Any], str]:
    sku = unique("MUG")
    system.stock(sku, 10, price="12.50")
    order = new_order((sku, 2))
    system.submit(order)
    assert system.outcome(order["order_id"])["status"] == "confirmed"
    system.cli("orders", "ship", order["order_id"])
    wait_for(lambda: system.cli_json("status", order["order_id"])["status"] == "shipped", what="the shipment")
    return order, sku


def test_an_approved_return_refunds_restocks_and_closes_the_case(system: System) -> None:
    order, sku = shipped_order(system)
    order_id, email = order["order_id"], order["customer"]["email"]
    case_id = system.cli(
        "support", "open", order_id, "--kind", "return", "--text", "One is chipped",
        "--lines", f'[{{"sku": "{sku}", "quantity": 1}}]',
    ).stdout.strip()  # fmt: skip

    assert system.cli("support", "approve", case_id).stdout.startswith(f"{case_id}: approved")
    closing = wait_for(
        lambda: (case := case_of(system, case_id))["status"] == "closed" and case["conversation"][-1],
        timeout=60,
        what="the return to settle the case",
    )
    assert closing["text"] == f"Returned 1 x {sku}; refunded 12.50 CNY."
    wait_for(lambda: system.levels(sku) == (9, 0), what="the returned unit back in stock")
    assert ledger(system, order_id) == (2500, 1250), "the provider refunded the returned unit, once"
    returned = the_event(system, order_id, "order.returned")
    assert (returned["amount"], returned["case_id"], returned["total"]) == ("-12.50", case_id, "12.50")
    assert [(line["sku"], line["quantity"]) for line in returned["returned"]] == [(sku, 1)]
    wait_for(
        lambda: f"Your return request about order {order_id} is closed" in subjects(system, email),
        what="the closing email",
    )
    assert len({e["event_id"] for e in system.events.of(order_id) if e["type"] == "order.returned"}) == 1
    again = system.cli("support", "approve", case_id, check=False)
    assert (again.returncode, "refused (closed)" in again.stderr) == (1, True)


def test_a_redelivered_approval_returns_once(system: System) -> None:
    order, sku = shipped_order(system)
    order_id = order["order_id"]
    case_id = system.cli("support", "open", order_id, "--kind", "return", "--text", "No").stdout.strip()

    deliver_twice(system, ApproveCase(order_id=order_id, case_id=case_id))
    wait_for(lambda: case_of(system, case_id)["status"] == "closed", timeout=60, what="the settlement")
    wait_for(lambda: system.levels(sku) == (10, 0), what="both units back in stock")
    kinds = [e["kind"] for e in case_of(system, case_id)["conversation"]]
    assert kinds == ["opened", "approved", "closed"]
    returned = [e for e in system.events.of(order_id) if e["type"] == "order.returned"]
    assert len({e["event_id"] for e in returned}) == 1
    assert system.levels(sku) == (10, 0)  # returned once, not twice
    assert ledger(system, order_id) == (2500, 2500)


def test_an_exchange_at_the_same_price_sends_the_replacement_and_takes_the_returned_units_back(
    system: System,
) -> None:
    order, sku = shipped_order(system)
    order_id = order["order_id"]
    other = unique("MUG")
    system.stock(other, 5, price="12.50")
    case_id = system.cli(
        "support", "open", order_id, "--kind", "exchange", "--text", "Wrong colour",
        "--lines", f'[{{"sku": "{sku}", "quantity": 1}}]',
        "--replacement", f'[{{"sku": "{other}", "quantity": 1}}]',
    ).stdout.strip()  # fmt: skip
    system.cli("support", "approve", case_id)
    exchanged = the_event(system, order_id, "order.exchanged")
    assert (exchanged["amount"], exchanged["total"]) == ("0.00", "25.00")
    assert sorted((line["sku"], line["quantity"]) for line in exchanged["items"]) == sorted(
        [(sku, 1), (other, 1)]
    )
    wait_for(
        lambda: system.levels(sku) == (9, 0) and system.levels(other) == (4, 0), what="the units to move"
    )
    wait_for(lambda: case_of(system, case_id)["status"] == "closed", what="the case to close")
    assert ledger(system, order_id) == (2500, 0), "no money moves when prices match"


def test_an_exchange_for_a_dearer_item_charges_the_difference_and_one_out_of_stock_is_refused(
    system: System,
) -> None:
    order, sku = shipped_order(system)
    order_id = order["order_id"]
    dearer, scarce = unique("JUG"), unique("VASE")
    system.stock(dearer, 5, price="20.00")
    system.stock(scarce, 0, price="12.50")
    refused = system.cli(
        "support", "open", order_id, "--kind", "exchange", "--text", "Bigger please",
        "--lines", f'[{{"sku": "{sku}", "quantity": 1}}]',
        "--replacement", f'[{{"sku": "{scarce}", "quantity": 1}}]',
    ).stdout.strip()  # fmt: skip
    system.cli("support", "approve", refused)
    assert the_event(system, order_id, "order.exchange_rejected")["reason"] == "out_of_stock"
    wait_for(lambda: case_of(system, refused)["status"] == "open", what="the case back open with the reason")

    case_id = system.cli(
        "support", "open", order_id, "--kind", "exchange", "--text", "Bigger please",
        "--lines", f'[{{"sku": "{sku}", "quantity": 1}}]',
        "--replacement", f'[{{"sku": "{dearer}", "quantity": 1}}]',
    ).stdout.strip()  # fmt: skip
    system.cli("support", "approve", case_id)
    exchanged = the_event(system, order_id, "order.exchanged")
    assert (exchanged["amount"], exchanged["total"]) == ("7.50", "32.50")
    assert ledger(system, order_id) == (3250, 0)
    wait_for(
        lambda: system.levels(dearer) == (4, 0) and system.levels(sku) == (9, 0), what="the units to move"
    )
