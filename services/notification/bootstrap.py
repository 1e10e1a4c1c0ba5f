"""Wire the notification worker: its database, the SMTP mailer if configured, the events consumer."""

from __future__ import annotations

from services.notification.actors import events_consumer
from services.notification.channels import SmtpMailer
from services.notification.handlers import NotificationHandlers
from services.notification.store import NotificationRepository
from shared import store
from shared.messaging.transport import Transport
from shared.runtime import WorkerApp
from shared.settings import Settings


def bootstrap(settings: Settings) -> WorkerApp:
    client = store.connect(settings, "notification")
    notifications = NotificationRepository(store.database(client, settings, "notification"))
    mailer = (
        SmtpMailer(settings.smtp_url, settings.mail_from, ca_file=settings.smtp_ca_file)
        if settings.smtp_url
        else None
    )
    handlers = NotificationHandlers(
        notifications,
        mailer,
        operators=settings.operator_email,
        lease_seconds=settings.notification_lease_seconds,
    )
    transport = Transport(settings, "notification")
    return WorkerApp(
        "notification",
        settings,
        transport,
        consumers=[events_consumer(transport, handlers)],
        on_start=[notifications.ensure_indexes],
        closers=[client.close],
    )
