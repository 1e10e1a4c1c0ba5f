"""Reporting use cases: turn order events into facts, and facts into reports."""

from __future__ import annotations

import json

from pydantic import ValidationError

from services.reporting.domain import SalesReport, build_report, line_facts, outcome_fact
from services.reporting.store import SalesFacts
from shared import metrics
from shared.contracts.base import utcnow
from shared.contracts.events import OrderStatusChanged
from shared.errors import InvalidMessage
from shared.logs import message_context
from shared.messaging.exchanges import Delivery


class ReportingHandlers:
    def __init__(self, facts: SalesFacts, currency: str) -> None:
        self.facts = facts
        self.currency = currency

    def on_event(self, delivery: Delivery) -> None:
        try:
            if not str(json.loads(delivery.body).get("type", "")).startswith("order."):
                return
            event = OrderStatusChanged.model_validate_json(delivery.body)
        except (ValueError, AttributeError, ValidationError) as e:
            raise InvalidMessage(f"not a valid order event: {e}") from e
        with message_context(message_id=event.event_id, order_id=event.order_id):
            # Lines first: a crash between the two writes leaves nothing counted twice on redelivery.
            self.facts.record_lines(line_facts(event))
            self.facts.record_outcome(outcome_fact(event))
        metrics.REPORT_LAG.set(max(0.0, (utcnow() - event.occurred_at).total_seconds()))

    def sales_report(self) -> SalesReport:
        return build_report(
            self.currency,
            self.facts.outcomes_by_status_and_reason(),
            self.facts.sales_by("sku"),
            self.facts.sales_by("day"),
        )
