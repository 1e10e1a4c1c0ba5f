"""Email over SMTP. The message id is derived from the notification id, so mail systems can dedupe."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from services.notification.domain import Notification
from shared.errors import TransientError


class DeliveryFailed(TransientError):
    pass


class SmtpMailer:
    """Sends through an SMTP server named by a URL: smtp://[user:pass@]host[:port], or smtps:// for TLS."""

    def __init__(self, url: str, sender: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"not an SMTP URL: {parts.scheme}://{parts.hostname}")
        self.host = parts.hostname
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.tls = parts.scheme == "smtps"
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender
        self.timeout = timeout

    def send(self, notification: Notification) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = notification.recipient
        message["Subject"] = notification.subject
        # Stable across attempts, so a mail system can drop a copy sent twice.
        message["Message-ID"] = f"<{notification.notification_id}@orderflow>"
        message.set_content(notification.body)
        client_type = smtplib.SMTP_SSL if self.tls else smtplib.SMTP
        try:
            with client_type(self.host, self.port, timeout=self.timeout) as client:
                if self.username and self.password:
                    client.login(self.username, self.password)
                client.send_message(message)
        except (OSError, smtplib.SMTPException) as e:
            raise DeliveryFailed(f"SMTP {self.host}:{self.port}: {e}") from e
