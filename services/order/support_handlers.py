"""Support desk use cases: open, answer, approve and close cases, and settle them when the order is done.

Every use case takes a batch: it reads the cases (and orders) it concerns by id, decides each
command with the domain, writes the changes, then says what each change implies. A command a case
has applied already (a redelivery) changes nothing and says again what it implied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol, TypeVar

from services.order.domain import Order
from services.order.support_domain import Case, open_case
from shared.contracts.base import utcnow
from shared.contracts.events import Event
from shared.contracts.requests import CaseSettled
from shared.contracts.support import ApproveCase, CloseCase, OpenCase, ReplyCase
from shared.errors import TransientError
from shared.logs import message_context
from shared.messaging.ports import Batch, CommandSender, EventSink

log = logging.getLogger(__name__)


C = TypeVar("C", ReplyCase, CloseCase, ApproveCase, CaseSettled)

# How often a batch re-reads the cases another writer changed under it before giving up (and
# being retried as a whole).
CONCURRENT_ATTEMPTS = 3


class ConcurrentCaseUpdate(TransientError):
    """Other writers kept changing these cases between our reads and our writes."""


class CaseStore(Protocol):
    """Where cases are kept (CaseRepository): inserted under their id, changed from the version read."""

    def add(self, cases: list[Case]) -> set[str]: ...

    def refresh(self, case_ids: Iterable[str]) -> dict[str, Case]: ...

    def save(self, cases: list[Case]) -> list[Case]: ...


class OrderLookup(Protocol):
    """Reads orders by id (OrderRepository): a case is decided on the order as it is."""

    def get_many(self, order_ids: Iterable[str]) -> dict[str, Order]: ...


class SupportHandlers:
    def __init__(
        self,
        cases: CaseStore,
        orders: OrderLookup,
        commands: CommandSender,
        events: EventSink,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.cases = cases
        self.orders = orders
        self.commands = commands
        self.events = events
        self.clock = clock

    def open_cases(self, batch: Batch[OpenCase]) -> None:
        """Open a case per new case id, or record why it cannot open; inserting the case under
        its id is the claim, so a resent opening finds its case and only says it again."""
        orders = self.orders.get_many({command.order_id for command in batch})
        now = self.clock()
        new: dict[str, tuple[Case, OpenCase]] = {}
        again: list[OpenCase] = []
        for command in batch:
            if command.case_id in new:
                again.append(command)
            else:
                new[command.case_id] = (open_case(command, orders.get(command.order_id), now), command)
        taken = self.cases.add([case for case, _ in new.values()])
        for case_id, (case, command) in new.items():
            if case_id in taken:
                again.append(command)
            else:
                self._changed(case, command.message_id)
        existing = self.cases.refresh({command.case_id for command in again})
        for command in again:
            case = existing[command.case_id]
            if case.applied(command.message_id):
                self._say(case, command.message_id)
            else:
                batch.reject(command, f"case {command.case_id} exists already, opened by another message")

    def reply_cases(self, batch: Batch[ReplyCase]) -> None:
        self._change(batch, lambda case, command, now: case.reply(command.message_id, command.text, now))

    def close_cases(self, batch: Batch[CloseCase]) -> None:
        self._change(batch, lambda case, command, now: case.close(command.message_id, command.note, now))

    def approve_cases(self, batch: Batch[ApproveCase]) -> None:
        """Approve returns and exchanges the order can still take back: the order is asked to
        carry them out, and settles the case when it is done."""
        orders = self.orders.get_many({command.order_id for command in batch})
        self._change(
            batch, lambda case, command, now: case.approve(command.message_id, orders.get(case.order_id), now)
        )

    def cases_settled(self, batch: Batch[CaseSettled]) -> None:
        """The order carried out (or refused) the return or exchange approved on each case."""

        def settle(case: Case, settlement: CaseSettled, now: datetime) -> None:
            if not case.settled(settlement, now):
                log.info("ignoring the settlement of case %s: it is %s", case.case_id, case.status)

        self._change(batch, settle)

    def _change(self, batch: Batch[C], transition: Callable[[Case, C, datetime], object]) -> None:
        """Apply each command to its case and store the lot; a case another writer changed
        since it was read is read again and its commands applied again."""
        pending = list(batch)
        for _ in range(CONCURRENT_ATTEMPTS):
            cases = self.cases.refresh({command.case_id for command in pending})
            now = self.clock()
            changed: dict[str, tuple[Case, list[str]]] = {}
            for command in pending:
                with message_context(message_id=command.message_id, order_id=command.order_id):
                    self._apply(batch, command, cases, changed, transition, now)
            lost = {case.case_id for case in self.cases.save([case for case, _ in changed.values()])}
            for case_id, (case, message_ids) in changed.items():
                if case_id not in lost:
                    for message_id in message_ids:
                        self._changed(case, message_id)
            pending = [command for command in pending if command.case_id in lost]
            if not pending:
                return
        raise ConcurrentCaseUpdate(
            f"{len(pending)} case(s) kept changing while handling {type(pending[0]).__name__}"
        )

    def _apply(
        self,
        batch: Batch[C],
        command: C,
        cases: dict[str, Case],
        changed: dict[str, tuple[Case, list[str]]],
        transition: Callable[[Case, C, datetime], object],
        now: datetime,
    ) -> None:
        case = changed[command.case_id][0] if command.case_id in changed else cases.get(command.case_id)
        if case is None or case.order_id != command.order_id:
            batch.reject(
                command, f"{type(command).__name__} for unknown case {command.case_id} of {command.order_id}"
            )
            return
        if case.applied(command.message_id):
            # A redelivery: the first attempt may have stored the change and died before saying it.
            if command.case_id not in changed:
                self._say(case, command.message_id)
            return
        transition(case, command, now)
        if case.applied(command.message_id):  # changed, or the refusal recorded on it
            changed.setdefault(case.case_id, (case, []))[1].append(command.message_id)

    def _changed(self, case: Case, message_id: str) -> None:
        """A change was stored: log it, and say what it implies."""
        with message_context(message_id=message_id, order_id=case.order_id):
            refusal = case.refusal_of(message_id)
            if refusal is None:
                log.info("case %s (%s) is %s", case.case_id, case.kind, case.status)
            else:
                log.info("case %s (%s): refused: %s", case.case_id, case.kind, refusal.text)
        self._say(case, message_id)

    def _say(self, case: Case, message_id: str) -> None:
        for message in case.said_for(message_id):
            if isinstance(message, Event):
                self.events.publish(message)
            else:
                self.commands.send(message)
