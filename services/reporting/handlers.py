"""Reporting use cases: turn order events into facts, and facts into reports."""

from __future__ import annotations

from services.reporting.domain import SalesReport, build_report, line_facts, outcome_fact
from services.reporting.store import SalesFacts
from shared import metrics
from shared.contracts.base import utcnow
from shared.contracts.events import OrderStatusChanged
from shared.messaging.ports import Batch


class ReportingHandlers:
    def __init__(self, facts: SalesFacts, currency: str) -> None:
        self.facts = facts
        self.currency = currency

    def on_events(self, batch: Batch[OrderStatusChanged]) -> None:
        """Record each event's facts once, however often it arrives."""
        events = list(batch)
        # Lines first: a crash between the two writes leaves nothing counted twice on redelivery.
        self.facts.record_lines([fact for event in events for fact in line_facts(event, self.currency)])
        self.facts.record_outcomes([outcome_fact(event, self.currency) for event in events])
        latest = max(event.occurred_at for event in events)
        metrics.REPORT_LAG.set(max(0.0, (utcnow() - latest).total_seconds()))

    def sales_report(self) -> SalesReport:
        return build_report(
            self.currency,
            self.facts.outcomes_by_status_and_reason(),
            self.facts.sales_by("sku"),
            self.facts.sales_by("day"),
        )
