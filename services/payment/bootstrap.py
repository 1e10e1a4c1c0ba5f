"""Wire the payment worker: its database, one gateway adapter per payment method, its actors."""

from __future__ import annotations

from services.payment.actors import register_actors
from services.payment.gateways import SimulatedGateway
from services.payment.handlers import PaymentHandlers
from services.payment.store import PaymentLedger, PaymentRepository
from shared import store
from shared.contracts.intake import PaymentMethod
from shared.messaging import topology
from shared.messaging.transport import Transport
from shared.runtime import WorkerApp
from shared.settings import Settings


def bootstrap(settings: Settings) -> WorkerApp:
    client = store.connect(settings, "payment")
    # The simulated providers keep their ledger apart from the payment worker's own database.
    books = client[f"{settings.db_prefix}_simulated_gateway"]
    gateways = {
        method.value: SimulatedGateway(method.value, books, delay_seconds=settings.sim_gateway_delay)
        for method in PaymentMethod
    }
    transport = Transport(settings, "payment")
    db = store.database(client, settings, "payment")
    ledger = PaymentLedger(db)
    handlers = PaymentHandlers(
        PaymentRepository(db),
        gateways,
        transport.outbox,
        ledger=ledger,
        attempts=settings.payment_attempts,
        backoff_seconds=settings.min_backoff_ms / 1000,
    )
    register_actors(transport.bus, handlers)
    return WorkerApp(
        "payment",
        settings,
        transport,
        saga_queues=[topology.PAYMENT_QUEUE],
        on_start=[ledger.ensure_indexes],
        closers=[client.close],
    )
