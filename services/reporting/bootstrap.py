"""Wire the reporting worker: its database and the events consumer."""

from __future__ import annotations

from services.reporting.handlers import ReportingHandlers
from services.reporting.store import SalesFacts
from shared import store
from shared.messaging.exchanges import REPORTING_EVENTS, consumer_for
from shared.messaging.saga_bus import SagaBroker
from shared.runtime import WorkerApp
from shared.settings import Settings


def bootstrap(settings: Settings) -> WorkerApp:
    client = store.connect(settings)
    facts = SalesFacts(store.database(client, settings, "reporting"))
    handlers = ReportingHandlers(facts, settings.currency)
    return WorkerApp(
        "reporting",
        settings,
        SagaBroker(settings),
        consumers=[lambda: consumer_for(settings, REPORTING_EVENTS, handlers.on_event)],
        on_start=[facts.ensure_indexes],
        closers=[client.close],
    )
