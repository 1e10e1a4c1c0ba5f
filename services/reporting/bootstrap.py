"""Wire the reporting worker: its database and the events consumer."""

from __future__ import annotations

from services.reporting.actors import events_consumer
from services.reporting.handlers import ReportingHandlers
from services.reporting.store import SalesFacts
from shared import store
from shared.messaging.transport import Transport
from shared.runtime import WorkerApp
from shared.settings import Settings


def bootstrap(settings: Settings) -> WorkerApp:
    client = store.connect(settings, "reporting")
    facts = SalesFacts(store.database(client, settings, "reporting"))
    handlers = ReportingHandlers(facts, settings.currency)
    transport = Transport(settings, "reporting")
    return WorkerApp(
        "reporting",
        settings,
        transport,
        consumers=[events_consumer(transport, handlers)],
        on_start=[facts.ensure_indexes, facts.adopt_earlier_sales],
        closers=[client.close],
    )
