"""`orderflow support ...`: the support desk. It reads the cases; every change is a command to the
order worker, which owns them and decides it, and the command waits until the change is visible."""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import TypeAdapter, ValidationError

from services import commands
from services.order.support_domain import UNSETTLED, Case, CaseKind, units_text
from services.order.support_store import CaseRepository
from shared import store
from shared.contracts.intake import OrderLine
from shared.contracts.support import ApproveCase, CloseCase, OpenCase, ReplyCase
from shared.errors import CommandError, UsageError
from shared.settings import Settings

_LINES: TypeAdapter[list[OrderLine]] = TypeAdapter(list[OrderLine])


def new_case_id() -> str:
    """Named by the CLI, so that a resent opening opens one case."""
    return f"case-{uuid.uuid4().hex[:12]}"


def open_case(
    settings: Settings,
    order_id: str,
    kind: str,
    text: str,
    lines: str | None,
    replacement: str | None,
    as_json: bool,
    wait: float,
) -> int:
    """Open a case about an order; print its id (or the case, as JSON)."""
    _check_lines(kind, lines, replacement)
    command = OpenCase(
        order_id=order_id,
        case_id=new_case_id(),
        kind=kind,  # type: ignore[arg-type]
        text=text,
        returned=_lines("--lines", lines) if lines is not None else None,
        replacement=_lines("--replacement", replacement) if replacement is not None else [],
    )
    case = _send_and_wait(settings, command, wait)
    if as_json:
        print(json.dumps(case_view(case), indent=2))
    else:
        print(case.case_id)
    return 0


def reply(settings: Settings, case_id: str, text: str, wait: float) -> int:
    case = _known_case(settings, case_id)
    case = _send_and_wait(settings, ReplyCase(order_id=case.order_id, case_id=case_id, text=text), wait)
    print(f"{case_id}: {case.status}")
    return 0


def close(settings: Settings, case_id: str, note: str | None, wait: float) -> int:
    case = _known_case(settings, case_id)
    case = _send_and_wait(settings, CloseCase(order_id=case.order_id, case_id=case_id, note=note), wait)
    print(f"{case_id}: {case.status}")
    return 0


def approve(settings: Settings, case_id: str, wait: float) -> int:
    """Approve a return or an exchange: the order carries it out, then closes the case."""
    case = _known_case(settings, case_id)
    case = _send_and_wait(settings, ApproveCase(order_id=case.order_id, case_id=case_id), wait)
    if case.status == "closed":  # the order was quick: the return is done already
        print(f"{case_id}: approved and closed; {case.conversation[-1].text}")
    else:
        print(
            f"{case_id}: approved; the order is carrying out the {case.kind} of {units_text(case.returned)}"
        )
    return 0


def list_cases(settings: Settings, open_only: bool, as_json: bool) -> int:
    cases = [case for case in _cases(settings).all() if not open_only or case.status in UNSETTLED]
    if as_json:
        print(json.dumps([summary_view(case) for case in cases], indent=2))
        return 0
    print(f"{'CASE':<18} {'ORDER':<24} {'KIND':<9} {'STATUS':<9} {'OPENED':<20} TEXT")
    for case in cases:
        opened = case.opened_at.strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{case.case_id:<18} {case.order_id:<24} {case.kind:<9} {case.status:<9} {opened:<20} "
            f"{_one_line(case.text, 40)}"
        )
    return 0


def show(settings: Settings, case_id: str, as_json: bool) -> int:
    case = _known_case(settings, case_id)
    view = case_view(case)
    if as_json:
        print(json.dumps(view, indent=2))
        return 0
    reason = f" ({case.reason})" if case.reason else ""
    print(f"case {case.case_id}: {case.kind} about order {case.order_id}, {case.status}{reason}")
    if case.customer:
        print(f"  customer {case.customer.name} <{case.customer.email}> ({case.customer.customer_id})")
    if case.kind is not CaseKind.QUESTION:
        print(f"  returned: {units_text(case.returned)}")
    if case.kind is CaseKind.EXCHANGE:
        print(f"  replacement: {units_text(case.replacement)}")
    for entry in view["conversation"]:
        said = f" {entry['reason']}:" if entry["reason"] else ""
        text = f" {entry['text']}" if entry["text"] else ""
        print(f"  {entry['at']}  {entry['kind']:<8} -> {entry['status']:<8}{said}{text}")
    return 0


def summary_view(case: Case) -> dict[str, Any]:
    return {
        "case_id": case.case_id,
        "order_id": case.order_id,
        "kind": case.kind.value,
        "status": case.status.value,
        "reason": case.reason,
        "text": case.text,
        "customer": _customer_view(case),
        "opened_at": case.opened_at.isoformat(),
        "updated_at": case.conversation[-1].at.isoformat()
        if case.conversation
        else case.opened_at.isoformat(),
    }


def case_view(case: Case) -> dict[str, Any]:
    return {
        **summary_view(case),
        "returned": [{"sku": line.sku, "quantity": line.quantity} for line in case.returned],
        "replacement": [{"sku": line.sku, "quantity": line.quantity} for line in case.replacement],
        "conversation": [
            {
                "at": entry.at.isoformat(),
                "kind": entry.kind.value,
                "status": entry.status.value,
                "text": entry.text,
                "reason": entry.reason,
                "message_id": entry.message_id,
            }
            for entry in case.conversation
        ],
    }


def _customer_view(case: Case) -> dict[str, str | None] | None:
    customer = case.customer
    if customer is None:
        return None
    return {"customer_id": customer.customer_id, "name": customer.name, "email": customer.email}


def _send_and_wait(
    settings: Settings, command: OpenCase | ReplyCase | CloseCase | ApproveCase, wait: float
) -> Case:
    """Send a command to the order worker and wait until its case shows it applied: the case as it
    then is, or CommandError with the reason if it was refused."""
    commands.send(settings, command)
    cases = _cases(settings)

    def applied() -> Case | None:
        case = cases.get(command.case_id)
        return case if case is not None and case.applied(command.message_id) else None

    case = commands.applied(applied, wait, "order")
    refusal = case.refusal_of(command.message_id)
    if refusal is not None:
        raise CommandError(f"{case.case_id}: refused ({refusal.reason}): {refusal.text}")
    return case


def _known_case(settings: Settings, case_id: str) -> Case:
    case = _cases(settings).get(case_id)
    if case is None:
        raise CommandError(f"unknown case: {case_id}")
    return case


def _check_lines(kind: str, lines: str | None, replacement: str | None) -> None:
    if kind == CaseKind.QUESTION and (lines is not None or replacement is not None):
        raise UsageError("--lines and --replacement are for a return or an exchange")
    if kind == CaseKind.RETURN and replacement is not None:
        raise UsageError("--replacement is for an exchange")
    if kind == CaseKind.EXCHANGE and replacement is None:
        raise UsageError('an exchange needs --replacement, e.g. \'[{"sku": "SKU-2", "quantity": 1}]\'')


def _lines(option: str, text: str) -> list[OrderLine]:
    """A JSON list of {"sku", "quantity"}, as the intake takes them."""
    try:
        lines = _LINES.validate_json(text)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, problem['loc'])) or '(list)'}: {problem['msg']}"
            for problem in e.errors()[:5]
        )
        raise UsageError(f'{option}: expected a JSON list of {{"sku", "quantity"}}: {problems}') from e
    if not lines:
        raise UsageError(f"{option}: name at least one line")
    return lines


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _cases(settings: Settings) -> CaseRepository:
    return CaseRepository(store.database(store.connect(settings), settings, "order"))
