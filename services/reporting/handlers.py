"""Reporting use cases: turn order events into facts, and facts into reports."""

from __future__ import annotations

from typing import Any

from services.reporting.domain import (
    ReportableEvent,
    SalesReport,
    build_report,
    change_fact,
    change_lines,
    next_sale,
    outcome_fact,
    refund_fact,
    sale_step,
)
from services.reporting.store import SalesFacts
from shared import metrics
from shared.contracts.base import utcnow
from shared.contracts.events import OrderChanged, OrderRefunded, OrderStatusChanged
from shared.messaging.ports import Batch


class ReportingHandlers:
    def __init__(self, facts: SalesFacts, currency: str) -> None:
        self.facts = facts
        self.currency = currency

    def on_events(self, batch: Batch[ReportableEvent]) -> None:
        """Record each event's facts once, however often it arrives."""
        events = list(batch)
        steps: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            if not isinstance(event, OrderRefunded) and (step := sale_step(event, self.currency)):
                steps.setdefault(event.order_id, []).append(step)
        changes = [event for event in events if isinstance(event, OrderChanged)]
        # Lines first: a crash between the writes leaves nothing counted twice on redelivery.
        self._record_sales(steps)
        self.facts.record_lines([fact for event in changes for fact in change_lines(event, self.currency)])
        self.facts.record_changes([change_fact(event, self.currency) for event in changes])
        self.facts.record_refunds(
            [refund_fact(event, self.currency) for event in events if isinstance(event, OrderRefunded)]
        )
        self.facts.record_outcomes(
            [outcome_fact(event, self.currency) for event in events if isinstance(event, OrderStatusChanged)]
        )
        latest = max(event.occurred_at for event in events)
        metrics.REPORT_LAG.set(max(0.0, (utcnow() - latest).total_seconds()))

    def _record_sales(self, steps: dict[str, list[dict[str, Any]]]) -> None:
        """Add the steps to their orders' sales: the next version of each is claimed by inserting
        it, then its line facts are inserted. An order whose version another process claimed first
        is read again and moved on from there."""
        while steps:
            latest = self.facts.sales_of(steps)
            # The last version's facts go in before the next is claimed, in case its writer died
            # between the two (inserting them again changes nothing).
            self.facts.record_lines([fact for sale in latest.values() for fact in sale["facts"]])
            sales = [
                sale
                for order_id, order_steps in steps.items()
                if (sale := next_sale(order_id, latest.get(order_id), order_steps)) is not None
            ]
            taken = self.facts.claim_sales(sales)
            self.facts.record_lines(
                [fact for sale in sales if sale["_id"] not in taken for fact in sale["facts"]]
            )
            steps = {sale["order_id"]: steps[sale["order_id"]] for sale in sales if sale["_id"] in taken}

    def sales_report(self) -> SalesReport:
        refunds, refunded = self.facts.refund_totals()
        return build_report(
            self.currency,
            self.facts.outcomes_by_status_and_reason(),
            self.facts.sales_by("sku"),
            self.facts.sales_by("day"),
            changed=self.facts.orders_changed(),
            units_returned=-self.facts.units_of("returned"),
            refunds=refunds,
            refunded=refunded,
        )
