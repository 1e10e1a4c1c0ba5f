"""Order use cases: take in submissions, move each order's saga on as replies and deadlines arrive.

Every use case takes a batch: it reads the orders it concerns in one round trip, decides each
with the domain, writes the transitions in one round trip, and says what the new states imply.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from itertools import pairwise
from typing import TypeVar

from services.order.customers import CustomerBook
from services.order.domain import (
    HistoryEntry,
    Order,
    OrderStatus,
    SagaStep,
    TransitionNotAllowed,
    intake_cause,
)
from services.order.intake import RejectedSubmission, Submission
from services.order.store import OrderRepository, RecentOrders
from shared import metrics
from shared.contracts import saga
from shared.contracts.base import Message, OrderMessage, derive_id, new_id, utcnow
from shared.contracts.events import Event
from shared.contracts.requests import OrderRequest
from shared.errors import TransientError
from shared.logs import message_context
from shared.messaging.ports import Backlog, Batch, CommandSender, EventSink, QueueProbe
from shared.messaging.routes import queue_of

log = logging.getLogger(__name__)

R = TypeVar("R", bound=OrderMessage)

# How often a batch re-reads the orders another writer moved under it before giving up (and
# being retried as a whole).
CONCURRENT_ATTEMPTS = 3


class ConcurrentUpdate(TransientError):
    """Other writers kept moving these orders between our reads and our writes."""


class OrderHandlers:
    def __init__(
        self,
        orders: OrderRepository | RecentOrders,
        commands: CommandSender,
        events: EventSink,
        queues: QueueProbe,
        *,
        currency: str,
        step_timeout: timedelta = timedelta(seconds=30),
        partition_of: Callable[[str], int] = lambda sku: 0,
        max_in_flight: int = 500,
        compensation_grace: timedelta = timedelta(minutes=5),
        complete_after: timedelta = timedelta(days=14),
        clock: Callable[[], datetime] = utcnow,
        customers: CustomerBook | None = None,
    ) -> None:
        self.orders = orders
        self.commands = commands
        self.events = events
        self.queues = queues
        self.currency = currency
        self.step_timeout = step_timeout
        self.partition_of = partition_of
        self.compensation_grace = compensation_grace
        self.complete_after = complete_after
        self.clock = clock
        self.customers = customers
        self.in_flight = InFlight(max_in_flight, horizon=4 * step_timeout)
        # Step timers wait here and leave together, once a second (flush_timers): one message per
        # second instead of one per step. A worker that dies loses a second's worth; the sweep
        # finds those sagas.
        self._timers: list[tuple[saga.StepDeadline, timedelta]] = []
        self._timers_lock = threading.Lock()

    # Intake -----------------------------------------------------------------------------------

    def admits(self) -> bool:
        """Whether to take new orders in now: not while this process has as many sagas under way
        as it may. Waiting in the intake queue, an order holds no stock and no step's clock runs."""
        return self.in_flight.has_room(self.clock())

    def submit_orders(self, batch: Batch[Submission]) -> None:
        """Start a saga per new order id; a resubmitted id starts nothing new. Invalid submissions
        are recorded as rejected and dead-lettered."""
        now = self.clock()
        new: dict[str, Order] = {}
        again: list[str] = []
        for submission in batch:
            if isinstance(submission, RejectedSubmission):
                batch.reject(submission, submission.reason)
                order = Order.reject(submission.order_id, submission.errors, self.currency, now)
            else:
                order = Order.accept(submission, self.currency, now, self.step_timeout, self.partition_of)
            if order.order_id in new:
                again.append(order.order_id)
            else:
                new[order.order_id] = order
        existed = self.orders.add(list(new.values()))
        for order in new.values():
            if order.order_id in existed:
                again.append(order.order_id)
                continue
            with message_context(message_id=None, order_id=order.order_id):
                log.info("order %s is %s", order.order_id, order.status)
            if order.status is OrderStatus.PENDING:
                self.in_flight.started(order.order_id, now)
            status = "accepted" if order.status is OrderStatus.PENDING else order.status.value
            metrics.ORDERS.labels(status, order.reason or "").inc()
            self._dispatch(order)
        resubmitted = self.orders.get_many(again)
        if self.customers is not None:
            # Oldest first: an order still in its first state may follow an attempt that died before this.
            self.customers.record(
                [order for order in resubmitted.values() if order.last_cause == intake_cause(order.order_id)]
                + [order for order in new.values() if order.order_id not in existed]
            )
        for order in resubmitted.values():
            self._submitted_again(order)

    def _submitted_again(self, order: Order) -> None:
        if order.last_cause == intake_cause(order.order_id):
            # Still in its first state: the first attempt may have died before saying it.
            self._dispatch(order)
            return
        with message_context(message_id=None, order_id=order.order_id):
            log.info("order %s was submitted before; ignoring the resubmission", order.order_id)
        if order.history[0].status is OrderStatus.PENDING:
            # Its acceptance may have been published without being confirmed before the order
            # moved on: say it again (subscribers drop a duplicate by its event id).
            self.events.publish(order.accepted_event())

    # Saga replies -----------------------------------------------------------------------------

    def stock_reserved(self, batch: Batch[saga.StockReserved]) -> None:
        self._advance(batch, Order.stock_reserved)

    def stock_reservation_failed(self, batch: Batch[saga.StockReservationFailed]) -> None:
        self._advance(batch, Order.stock_reservation_failed)

    def payment_captured(self, batch: Batch[saga.PaymentCaptured]) -> None:
        self._advance(batch, Order.payment_captured)

    def payment_declined(self, batch: Batch[saga.PaymentDeclined]) -> None:
        self._advance(batch, Order.payment_declined)

    def payment_failed(self, batch: Batch[saga.PaymentFailed]) -> None:
        self._advance(batch, Order.payment_failed)

    def stock_released(self, batch: Batch[saga.StockReleased]) -> None:
        self._advance(batch, Order.stock_released)

    def payment_refunded(self, batch: Batch[saga.PaymentRefunded]) -> None:
        self._advance(batch, Order.payment_refunded)

    def stock_returned(self, batch: Batch[saga.StockReturned]) -> None:
        self._advance(batch, Order.stock_returned)

    # Requests about placed orders ------------------------------------------------------------

    def take_requests(self, batch: Batch[OrderRequest]) -> None:
        """Cancel, amend, ship, complete (from the intake), return and exchange (from the support
        desk): each is carried out on its order as far as the order's state allows, refused with
        a reason, or kept until the order's saga or change is done. A request taken before
        changes nothing; one for an order never submitted is dead-lettered."""
        self._advance(batch, Order.take_request)

    def complete_shipped(self) -> int:
        """Ask each order shipped more than ORDERFLOW_COMPLETE_AFTER_DAYS ago to complete; returns
        how many were asked. A scan of the shipped orders: run now and then, never per message.
        The request (one per order, however often it is sent) goes the way of every other: a
        change under way finishes first, and its outcome is said at least once."""
        due = self.orders.shipped_before(self.clock() - self.complete_after)
        for order in due:
            self.commands.send(
                OrderRequest(
                    message_id=derive_id(order.order_id, "complete-in-time"),
                    order_id=order.order_id,
                    kind="complete",
                )
            )
        if due:
            log.info("asking %d order(s) shipped long enough ago to complete", len(due))
        return len(due)

    def stock_still_held(self, batch: Batch[saga.StockStillHeld]) -> None:
        """Inventory still holds units for these orders long after reserving them: say again
        what should become of them (sold, or given back), as each order's state implies."""
        orders = self.orders.get_many(question.order_id for question in batch)
        for question in batch:
            order = orders.get(question.order_id)
            if order is None:
                batch.reject(question, f"stock held for unknown order {question.order_id}")
                continue
            with message_context(message_id=question.message_id, order_id=order.order_id):
                commands = order.commands_for_held_stock(question.partition, question.hold)
                log.warning(
                    "order %s (%s): stock still held in partition %d; %s",
                    order.order_id,
                    order.status,
                    question.partition,
                    ", ".join(type(command).__name__ for command in commands) or "its saga decides",
                )
            for command in commands:
                self.commands.send(command)

    def _advance(self, batch: Batch[R], transition: Callable[[Order, R, datetime], None]) -> None:
        """Apply each reply to its order and store the lot. The orders come from this process's
        recent copies first: a reply that does not fit its copy, and one whose order another
        process moved since (its save is lost), is tried again on the order read afresh."""
        replies, fresh = list(batch), False
        for _ in range(CONCURRENT_ATTEMPTS):
            order_ids = {reply.order_id for reply in replies}
            orders = self.orders.refresh(order_ids) if fresh else self.orders.get_many(order_ids)
            moved: dict[str, tuple[Order, int, list[str]]] = {}
            unfit: list[R] = []
            for reply in replies:
                with message_context(message_id=reply.message_id, order_id=reply.order_id):
                    if not self._apply(batch, reply, orders, moved, transition, fresh):
                        unfit.append(reply)
            lost = {order.order_id for order in self.orders.save([order for order, _, _ in moved.values()])}
            for order_id, (order, recorded, causes) in moved.items():
                if order_id not in lost:
                    self._moved_on(order, recorded, causes)
            replies = [reply for reply in replies if reply.order_id in lost or reply in unfit]
            if not replies:
                return
            fresh = True
        raise ConcurrentUpdate(
            f"{len(replies)} order(s) kept changing while handling {type(replies[0]).__name__}"
        )

    def _apply(
        self,
        batch: Batch[R],
        reply: R,
        orders: dict[str, Order],
        moved: dict[str, tuple[Order, int, list[str]]],
        transition: Callable[[Order, R, datetime], None],
        fresh: bool,
    ) -> bool:
        """Apply one reply; False if it does not fit an order that may be a stale copy."""
        order = orders.get(reply.order_id)
        if order is None:
            batch.reject(reply, f"{type(reply).__name__} for unknown order {reply.order_id}")
            return True
        if reply.message_id == order.last_cause and order.order_id not in moved:
            # A redelivery of the reply that caused the current state: the first attempt may have
            # stored it and died before saying what follows.
            self._dispatch(order)
            return True
        recorded, causes = moved[order.order_id][1:] if order.order_id in moved else (len(order.history), [])
        try:
            transition(order, reply, self.clock())
        except TransitionNotAllowed as e:
            if not fresh:
                return False
            self._late(reply, order, e)
            return True
        moved[order.order_id] = (order, recorded, [*causes, reply.message_id])
        return True

    def _late(self, reply: OrderMessage, order: Order, why: TransitionNotAllowed) -> None:
        """A reply that does not fit the step: a duplicate, or one that came after a timeout. A
        duplicate of a message that settled requests (or of a request) says their outcome again:
        its first handling may have stored it and died before saying it."""
        compensations = (
            order.compensations_for_late_capture() if isinstance(reply, saga.PaymentCaptured) else []
        )
        if compensations:
            log.warning("order %s: payment captured after the saga gave up; refunding", order.order_id)
        else:
            log.info("ignoring %s: %s", type(reply).__name__, why)
        for message in compensations:
            self.commands.send(message)
        self._say(order.said_again(reply.message_id))

    # Deadlines --------------------------------------------------------------------------------

    def step_deadlines(self, batch: Batch[saga.StepDeadline]) -> None:
        """Timers of steps that have waited the step timeout: time out those still waiting.

        A recent copy that has moved past a timer's version settles it (a copy is never ahead of
        the order); the rest are decided on the order read afresh."""
        timers = list(batch)
        recent = self.orders.get_many(timer.order_id for timer in timers)
        undecided = {
            timer.order_id
            for timer in timers
            if (order := recent.get(timer.order_id)) is not None
            and (
                # A copy older than the timer (another process moved the order) cannot judge it.
                order.version < timer.version
                or (
                    (order.status is OrderStatus.PENDING or order.has_dues) and order.version == timer.version
                )
            )
        }
        orders = self.orders.refresh(undecided) if undecided else {}
        fired = [
            (order, timer)
            for timer in timers
            if (order := orders.get(timer.order_id)) is not None and order.version == timer.version
        ]
        self._expire([(order, timer) for order, timer in fired if order.status is OrderStatus.PENDING])
        asking: list[Order] = []
        for order, timer in fired:
            if order.status is OrderStatus.PENDING:
                continue
            extended = self._patience(order.due_commands(), timer) if order.change_may_fail else None
            if extended is None:
                asking.append(order)
            else:
                self._set_timer(order, extended=extended)
        self._follow_up(asking)

    def sweep(self) -> int:
        """The safety net under the timers, run now and then: time out sagas long past their
        deadline, and ask again for follow-ups long overdue (a timer lost with a broker's data,
        say). A scan of the orders: rare by design. Returns how many sagas timed out."""
        now = self.clock()
        under_way = self.orders.under_way()
        pending = [order for order in under_way if order.status is OrderStatus.PENDING]
        overdue = sorted(
            (order for order in under_way if order.deadline and order.deadline <= now - self.step_timeout),
            key=lambda order: order.deadline or now,
        )
        outstanding = [order.due_since for order in under_way if order.due_since is not None]
        metrics.SAGAS_PENDING.set(len(pending))
        metrics.SAGAS_OVERDUE.set(sum(1 for order in overdue if order.status is OrderStatus.PENDING))
        metrics.OLDEST_PENDING_SAGA.set(
            max(((now - order.created_at).total_seconds() for order in pending), default=0)
        )
        metrics.COMPENSATIONS_OVERDUE.set(
            sum(1 for since in outstanding if since <= now - self.compensation_grace)
        )
        self._follow_up([order for order in overdue if order.status is not OrderStatus.PENDING])
        return self._expire([(order, None) for order in overdue if order.status is OrderStatus.PENDING])

    def _follow_up(self, orders: list[Order]) -> None:
        """Finished orders whose refund or change is still outstanding: ask for it again (a change
        that can still be refused and heard nothing is refused)."""
        now = self.clock()
        asking = [order for order in orders if order.has_dues]
        for order in asking:
            order.follow_up(now)
        lost = {order.order_id for order in self.orders.save(asking)}
        for order in asking:
            if order.order_id in lost:  # a reply moved it first
                continue
            messages = order.followed_up()
            with message_context(message_id=order.last_cause, order_id=order.order_id):
                log.warning(
                    "order %s: asking again (%d) for %s",
                    order.order_id,
                    order.follow_ups,
                    ", ".join(
                        type(message).__name__ for message in messages if not isinstance(message, Event)
                    ),
                )
            self._say(messages)
            if order.has_dues:
                self._arm(order.deadline_timer(), order.timer_delay())

    def _expire(self, due: Iterable[tuple[Order, saga.StepDeadline | None]]) -> int:
        """Time out the orders whose step is waiting for nothing that is being worked on; set the
        timer again for the others. Returns how many timed out."""
        backlogs: dict[str, Backlog] = {}

        def backlog(command: Message) -> Backlog:
            queue = queue_of(command)
            if queue not in backlogs:
                backlogs[queue] = self.queues.backlog(queue)
            return backlogs[queue]

        expiring: list[Order] = []
        for order, timer in due:
            extended = self._patience(order.awaited(), timer, backlog)
            if extended is not None:
                self._set_timer(order, extended=extended)
            else:
                order.time_out(self.clock())
                expiring.append(order)
        recorded = {order.order_id: len(order.history) - 1 for order in expiring}
        lost = {order.order_id for order in self.orders.save(expiring)}
        for order in expiring:
            if order.order_id not in lost:  # else a reply or another worker moved it first
                with message_context(message_id=None, order_id=order.order_id):
                    log.warning("order %s timed out waiting in %s", order.order_id, order.history[-2].step)
                self._moved_on(order, recorded[order.order_id])
        return len(expiring) - len(lost)

    def _patience(
        self,
        commands: list[Message],
        timer: saga.StepDeadline | None,
        backlog: Callable[[Message], Backlog] | None = None,
    ) -> bool | None:
        """Whether a step whose timer fired waits on: None if it gives up, else the `extended`
        flag of its next timer. Queued behind work being done, it is a backlog, not a failure
        (as long as it takes); with its command perhaps in a consumer's hands, it gets one more
        step timeout. A timer the sweep stands in for (None) gives up."""
        if timer is None:
            return None
        backlogs = [(backlog or self._backlog)(command) for command in commands]
        if any(queue.worked_off for queue in backlogs):
            return timer.extended
        if not timer.extended and any(queue.consumers for queue in backlogs):
            return True
        return None

    def _backlog(self, command: Message) -> Backlog:
        return self.queues.backlog(queue_of(command))

    def _set_timer(self, order: Order, *, extended: bool) -> None:
        timer = order.deadline_timer().model_copy(update={"message_id": new_id(), "extended": extended})
        self._arm(timer, order.timer_delay())

    def _arm(self, timer: saga.StepDeadline, delay: timedelta) -> None:
        with self._timers_lock:
            self._timers.append((timer, delay))

    def flush_timers(self) -> int:
        """Send the timers of the steps started since the last flush; returns how many."""
        with self._timers_lock:
            timers, self._timers = self._timers, []
        for timer, delay in timers:
            self.commands.send(timer, delay=delay)
        return len(timers)

    # Internals --------------------------------------------------------------------------------

    def _moved_on(self, order: Order, recorded: int, causes: list[str] | None = None) -> None:
        """Transitions were stored (caused by `causes`, by default the last one's): log them,
        count them, and say what the new state implies."""
        causes = causes or [order.last_cause]
        with message_context(message_id=order.last_cause, order_id=order.order_id):
            log.info("order %s is %s (%s)", order.order_id, order.status, order.step)
        finished = (
            order.status is not OrderStatus.PENDING
            and order.history[recorded - 1].status is OrderStatus.PENDING
        )
        if finished:
            self.in_flight.finished(order.order_id)
        _observe(order, order.history[recorded - 1 :], finished, causes)
        if order.history[recorded - 1].status is OrderStatus.PENDING:
            self._dispatch(order, causes)
        else:
            self._followed_up(order, order.history[recorded:], causes)

    def _followed_up(self, order: Order, entries: list[HistoryEntry], causes: list[str]) -> None:
        """A finished order moved on (a follow-up is done, a request was taken, its change moved):
        it says only what is new (what is still due is said again by its change's step), and sets
        the timer of what is still due, since its version moved."""
        if any(entry.step is SagaStep.REFUNDED for entry in entries):
            self.events.publish(order.refunded_event())
        self._say(order.news(causes))
        if order.has_dues:
            self._arm(order.deadline_timer(), order.timer_delay())

    def _dispatch(self, order: Order, causes: list[str] | None = None) -> None:
        self._say(order.outbox(causes), order)

    def _say(self, messages: Iterable[Message | Event], timed: Order | None = None) -> None:
        for message in messages:
            if isinstance(message, Event):
                self.events.publish(message)
            elif isinstance(message, saga.StepDeadline):
                assert timed is not None, "only an order's outbox sets its timer"
                self._arm(message, timed.timer_delay())
            else:
                self.commands.send(message)


def _observe(order: Order, entries: list[HistoryEntry], finished: bool, causes: list[str]) -> None:
    """Business metrics of the transitions just stored: steps left, compensations, outcomes,
    what happened after confirmation, and the requests settled."""
    steps = [entry for entry in entries if entry.step not in (SagaStep.REFUNDED, SagaStep.CHANGED)]
    for before, now in pairwise(steps):
        if before.status is not OrderStatus.PENDING:
            metrics.ORDERS.labels(now.status.value, now.reason or "").inc()
            continue
        metrics.STEP_SECONDS.labels(before.step.value).observe((now.at - before.at).total_seconds())
        if now.step is SagaStep.RELEASING_STOCK and before.step is not SagaStep.RELEASING_STOCK:
            metrics.COMPENSATIONS.labels(now.reason or "").inc()
    if finished:
        metrics.ORDERS.labels(order.status.value, order.reason or "").inc()
        metrics.SAGA_SECONDS_HISTOGRAM.labels(order.status.value).observe(
            (order.history[-1].at - order.created_at).total_seconds()
        )
    if any(entry.step is SagaStep.REFUNDED for entry in entries[1:]):
        metrics.ORDER_REFUNDS.inc()
    for record in order.requests:
        if record.cause in causes:
            metrics.ORDER_CHANGES.labels(record.kind, record.outcome).inc()
            if record.outcome == "done" and record.amount < 0:
                metrics.ORDER_REFUNDS.inc()


class InFlight:
    """The sagas under way, as one process of the order pool counts them, up to a limit.

    Replies go to whichever process takes them, so a process finishes sagas others started and
    others finish its own. Each finish counts where it happens: it forgets the saga if this
    process started it, else this process's oldest. The pool's counts then add up to the sagas
    under way, and a process that starts more than it finishes stops admitting while the others
    go on. An entry older than `horizon` is forgotten too, so a count never blocks for good.
    """

    def __init__(self, limit: int, horizon: timedelta) -> None:
        self.limit = limit
        self.horizon = horizon
        self._started: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def started(self, order_id: str, at: datetime) -> None:
        with self._lock:
            self._started[order_id] = at

    def finished(self, order_id: str) -> None:
        with self._lock:
            if self._started.pop(order_id, None) is None and self._started:
                del self._started[next(iter(self._started))]

    def __len__(self) -> int:
        return len(self._started)

    def has_room(self, now: datetime) -> bool:
        with self._lock:
            if len(self._started) >= self.limit:
                # Oldest first (dicts keep insertion order): forget what is past the horizon.
                for order_id, at in list(self._started.items()):
                    if now - at < self.horizon:
                        break
                    del self._started[order_id]
            return len(self._started) < self.limit
