"""Support cases as pure rules: a customer's question, return or exchange about one order.

A case goes open -> answered (after a reply) -> approved (a return or an exchange the order is
carrying out) -> closed. Every change is an entry of its conversation naming the message that
caused it, so a redelivered command finds itself applied; a refusal is an entry too, and changes
nothing else. What an entry implies (the customer's event, the order's request) is derived from
the entry alone, with deterministic ids, so saying it again after a crash is always safe.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from services.order.domain import Customer, Order, event_customer
from shared.contracts.base import Message, derive_id
from shared.contracts.events import Event, SupportEvent
from shared.contracts.intake import OrderLine, units_per_sku
from shared.contracts.requests import CaseSettled, OrderRequest
from shared.contracts.support import OpenCase

# Only an order that left the warehouse can come back. Compared as values: the statuses belong
# to the order's saga, which names them.
RETURNABLE_STATUSES = ("shipped", "completed")


class CaseKind(StrEnum):
    QUESTION = "question"
    RETURN = "return"
    EXCHANGE = "exchange"


class CaseStatus(StrEnum):
    OPEN = "open"
    ANSWERED = "answered"
    APPROVED = "approved"
    CLOSED = "closed"
    # The case could not be opened (an unknown order, a return of an unshipped one): it keeps
    # the customer's text and the reason, and never opens.
    REFUSED = "refused"


class EntryKind(StrEnum):
    OPENED = "opened"
    REPLIED = "replied"
    APPROVED = "approved"
    CLOSED = "closed"
    REFUSED = "refused"


class Refusal(StrEnum):
    UNKNOWN_ORDER = "unknown_order"
    NOT_SHIPPED = "not_shipped"
    NOT_IN_ORDER = "not_in_order"
    TOO_MANY_UNITS = "too_many_units"
    NO_REPLACEMENT = "no_replacement"
    NOT_A_RETURN = "not_a_return"
    CLOSED = "closed"
    ALREADY_APPROVED = "already_approved"
    IN_PROGRESS = "in_progress"


# Cases not closed: what `orderflow support list --open` shows.
UNSETTLED = (CaseStatus.OPEN, CaseStatus.ANSWERED, CaseStatus.APPROVED)

EVENT_TYPES = {
    EntryKind.OPENED: "support.opened",
    EntryKind.REPLIED: "support.answered",
    EntryKind.CLOSED: "support.closed",
}


@dataclass(frozen=True)
class CaseLine:
    sku: str
    quantity: int


@dataclass(frozen=True)
class Entry:
    """One turn of the conversation. `status` is the case's after it, so what it implies can be
    said again, identically, whatever happened to the case since."""

    at: datetime
    kind: EntryKind
    message_id: str
    status: CaseStatus
    text: str | None = None
    reason: str | None = None  # of a refusal; `text` then says why in a sentence


@dataclass(frozen=True)
class Rejection:
    reason: str  # a Refusal, or the order's own reason when it refuses a settlement
    detail: str


@dataclass
class Case:
    case_id: str
    order_id: str
    kind: CaseKind
    text: str
    opened_at: datetime
    status: CaseStatus = CaseStatus.OPEN
    # Taken from the order when the case opens: the customer is told of every change.
    customer: Customer | None = None
    currency: str | None = None
    returned: list[CaseLine] = field(default_factory=list)
    replacement: list[CaseLine] = field(default_factory=list)
    # The last refusal's reason, until the case moves on.
    reason: str | None = None
    conversation: list[Entry] = field(default_factory=list)
    version: int = 0

    # Changes ----------------------------------------------------------------------------------

    def reply(self, message_id: str, text: str, now: datetime) -> None:
        """Answer the customer: an open case is answered; an approved one stays approved."""
        if self.status is CaseStatus.CLOSED:
            self._refuse(message_id, now, Rejection(Refusal.CLOSED, f"case {self.case_id} is closed"))
            return
        if self.status is not CaseStatus.APPROVED:
            self.status = CaseStatus.ANSWERED
        self._record(EntryKind.REPLIED, message_id, now, text)

    def close(self, message_id: str, note: str | None, now: datetime) -> None:
        """Close the case; not while the order carries out its return (the settlement closes it)."""
        if self.status is CaseStatus.CLOSED:
            self._refuse(message_id, now, Rejection(Refusal.CLOSED, f"case {self.case_id} is closed already"))
        elif self.status is CaseStatus.APPROVED:
            detail = (
                f"the {self.kind} of case {self.case_id} is being carried out; it closes the case when done"
            )
            self._refuse(message_id, now, Rejection(Refusal.IN_PROGRESS, detail))
        else:
            self.status = CaseStatus.CLOSED
            self._record(EntryKind.CLOSED, message_id, now, note)

    def approve(self, message_id: str, order: Order | None, now: datetime) -> None:
        """Have the order carry out the return or exchange, if it still can take it back."""
        rejection = self._approval_rejection(order)
        if rejection is not None:
            self._refuse(message_id, now, rejection)
            return
        self.status = CaseStatus.APPROVED
        self._record(EntryKind.APPROVED, message_id, now)

    def settled(self, settlement: CaseSettled, now: datetime) -> bool:
        """The order carried out the approved return or exchange (the case closes, saying what
        money moved) or refused it (the case is open again, with the reason). False if the case
        was not waiting for it: nothing changes."""
        if self.status is not CaseStatus.APPROVED:
            return False
        if settlement.outcome == "done":
            self.status = CaseStatus.CLOSED
            self._record(
                EntryKind.CLOSED, settlement.message_id, now, self.settlement_note(settlement.amount)
            )
        else:
            self.status = CaseStatus.OPEN
            reason = settlement.reason or "refused"
            detail = f"the order refused the {self.kind}: {settlement.detail or reason}"
            self._refuse(settlement.message_id, now, Rejection(reason, detail))
        return True

    # What the case says -----------------------------------------------------------------------

    def applied(self, message_id: str) -> bool:
        return any(entry.message_id == message_id for entry in self.conversation)

    def refusal_of(self, message_id: str) -> Entry | None:
        """The refusal a message met, if it met one."""
        return next(
            (e for e in self.conversation if e.message_id == message_id and e.kind is EntryKind.REFUSED),
            None,
        )

    def said_for(self, message_id: str) -> list[Message | Event]:
        """What the entries a message caused imply: the customer's events, the order's request."""
        said: list[Message | Event] = []
        for entry in self.conversation:
            if entry.message_id != message_id:
                continue
            if entry.kind in EVENT_TYPES:
                said.append(self._event(entry))
            elif entry.kind is EntryKind.APPROVED:
                said.append(self._order_request(entry))
        return said

    def settlement_note(self, amount: str | None) -> str:
        """What the customer reads when the order has carried out the case's return or exchange.
        A return's amount is what was refunded; an exchange's difference is signed as in
        `order.exchanged`: charged if positive, refunded if negative."""
        currency = f" {self.currency}" if self.currency else ""
        difference = Decimal(amount) if amount is not None else Decimal(0)
        magnitude = f"{amount.lstrip('-') if amount else '0'}{currency}"
        if self.kind is CaseKind.RETURN:
            money = f"refunded {magnitude}" if difference else "nothing to refund"
            return f"Returned {units_text(self.returned)}; {money}."
        if not difference:
            money = "no money moved"
        else:
            money = f"{'refunded' if difference < 0 else 'charged'} {magnitude}"
        return f"Exchanged {units_text(self.returned)} for {units_text(self.replacement)}; {money}."

    def copy(self) -> Case:
        return copy.deepcopy(self)

    # Internals --------------------------------------------------------------------------------

    def _approval_rejection(self, order: Order | None) -> Rejection | None:
        if self.kind is CaseKind.QUESTION:
            return Rejection(
                Refusal.NOT_A_RETURN,
                f"case {self.case_id} is a question: only returns and exchanges are approved",
            )
        if self.status is CaseStatus.CLOSED:
            return Rejection(Refusal.CLOSED, f"case {self.case_id} is closed")
        if self.status is CaseStatus.APPROVED:
            return Rejection(Refusal.ALREADY_APPROVED, f"case {self.case_id} is approved already")
        return return_rejection(self.order_id, order, self.kind, self.returned, self.replacement)

    def _record(self, kind: EntryKind, message_id: str, now: datetime, text: str | None = None) -> None:
        self.reason = None
        self.conversation.append(Entry(now, kind, message_id, self.status, text))

    def _refuse(self, message_id: str, now: datetime, rejection: Rejection) -> None:
        self.reason = rejection.reason
        self.conversation.append(
            Entry(now, EntryKind.REFUSED, message_id, self.status, rejection.detail, rejection.reason)
        )

    def _event(self, entry: Entry) -> SupportEvent:
        event_type = EVENT_TYPES[entry.kind]
        return SupportEvent(
            # The same entry is always the same event: subscribers drop a repeat by its id.
            event_id=derive_id(self.case_id, entry.message_id, event_type),
            type=event_type,  # type: ignore[arg-type]
            occurred_at=entry.at,
            case_id=self.case_id,
            order_id=self.order_id,
            kind=self.kind.value,
            status=entry.status.value,
            text=entry.text,
            customer=event_customer(self.customer),
        )

    def _order_request(self, entry: Entry) -> OrderRequest:
        return OrderRequest(
            # Derived from the approval: a redelivery asks again under the same id; an approval
            # after the order refused an earlier one is a new request.
            message_id=derive_id(self.case_id, "approve", entry.message_id),
            occurred_at=entry.at,
            order_id=self.order_id,
            kind=self.kind.value,  # type: ignore[arg-type]
            case_id=self.case_id,
            returned=[OrderLine(sku=line.sku, quantity=line.quantity) for line in self.returned],
            replacement=[OrderLine(sku=line.sku, quantity=line.quantity) for line in self.replacement],
        )


def open_case(command: OpenCase, order: Order | None, now: datetime) -> Case:
    """The case a command opens: open, or refused with the reason if its order cannot have it.
    A return or an exchange that names no lines takes back all of the order's."""
    kind = CaseKind(command.kind)
    returned: list[CaseLine] = []
    if kind is not CaseKind.QUESTION:
        named = command.returned if command.returned is not None else order.lines if order else []
        returned = [CaseLine(line.sku, line.quantity) for line in named]
    case = Case(
        case_id=command.case_id,
        order_id=command.order_id,
        kind=kind,
        text=command.text,
        opened_at=now,
        customer=order.customer if order else None,
        currency=order.currency if order else None,
        returned=returned,
        replacement=[CaseLine(line.sku, line.quantity) for line in command.replacement]
        if kind is CaseKind.EXCHANGE
        else [],
    )
    rejection = return_rejection(command.order_id, order, kind, case.returned, case.replacement)
    if rejection is None:
        case._record(EntryKind.OPENED, command.message_id, now, command.text)
    else:
        case.status = CaseStatus.REFUSED
        case._refuse(command.message_id, now, rejection)
    return case


def return_rejection(
    order_id: str, order: Order | None, kind: CaseKind, returned: list[CaseLine], replacement: list[CaseLine]
) -> Rejection | None:
    """Why the order cannot take back these units (None if it can): it must exist, have left the
    warehouse, and hold at least as many units of each SKU; an exchange must name a replacement."""
    if order is None:
        return Rejection(Refusal.UNKNOWN_ORDER, f"unknown order {order_id}")
    if kind is CaseKind.QUESTION:
        return None
    status = order.status.value
    if status not in RETURNABLE_STATUSES:
        return Rejection(
            Refusal.NOT_SHIPPED,
            f"order {order_id} is {status}: only a shipped or completed order can be returned or exchanged",
        )
    held = units_per_sku((line.sku, line.quantity) for line in order.lines)
    asked = units_per_sku((line.sku, line.quantity) for line in returned)
    strangers = sorted(asked.keys() - held.keys())
    if strangers:
        return Rejection(Refusal.NOT_IN_ORDER, f"order {order_id} has no {', '.join(strangers)}")
    excess = sorted(sku for sku, units in asked.items() if units > held[sku])
    if excess:
        counts = ", ".join(f"{asked[sku]} x {sku} (it has {held[sku]})" for sku in excess)
        return Rejection(Refusal.TOO_MANY_UNITS, f"more units returned than order {order_id} holds: {counts}")
    if kind is CaseKind.EXCHANGE and not replacement:
        return Rejection(Refusal.NO_REPLACEMENT, "an exchange names the units sent instead (--replacement)")
    return None


def units_text(lines: Iterable[CaseLine]) -> str:
    return ", ".join(f"{line.quantity} x {line.sku}" for line in lines) or "nothing"
