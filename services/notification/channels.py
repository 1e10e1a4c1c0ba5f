"""Email over SMTP. The message id is derived from the notification id, so mail systems can dedupe."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote, urlsplit

from services.notification.domain import Notification
from shared.errors import PermanentError, TransientError


class DeliveryFailed(TransientError):
    pass


class InsecureSmtp(PermanentError):
    """The server cannot be spoken to safely (no STARTTLS before a login, a certificate that does not
    verify): retrying cannot make it safe, so fix the server or the CA file, then replay."""


def tls_context(ca_file: str | Path | None = None) -> ssl.SSLContext:
    """A context that verifies certificates and host names against the system's CAs, plus a private
    CA's PEM file when given (a test or private relay)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file))
    return context


class SmtpMailer:
    """Sends through an SMTP server named by a URL: smtp://[user:pass@]host[:port], upgraded with
    STARTTLS (and never logging in without it), or smtps:// for TLS from the start."""

    def __init__(
        self, url: str, sender: str, timeout: float = 10.0, ca_file: str | Path | None = None
    ) -> None:
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
        # Built once: a CA file that cannot be read stops the worker at startup, not at the first email.
        self.tls_context = tls_context(ca_file)

    def send(self, notification: Notification) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = notification.recipient
        message["Subject"] = notification.subject
        # Stable across attempts, so a mail system can drop a copy sent twice.
        message["Message-ID"] = f"<{notification.notification_id}@orderflow>"
        message.set_content(notification.body)
        try:
            with self._connect() as client:
                if self.username and self.password:
                    client.login(self.username, self.password)
                client.send_message(message)
        except ssl.SSLCertVerificationError as e:
            raise InsecureSmtp(
                f"SMTP {self.host}:{self.port}: certificate not trusted: {e.verify_message}"
            ) from e
        except (OSError, smtplib.SMTPException) as e:
            raise DeliveryFailed(f"SMTP {self.host}:{self.port}: {e}") from e

    def _connect(self) -> smtplib.SMTP:
        """A session over TLS whenever the server offers it; InsecureSmtp if credentials would go in clear."""
        if self.tls:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self.tls_context)
        client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            client.ehlo()
            if client.has_extn("starttls"):
                client.starttls(context=self.tls_context)
            elif self.username and self.password:
                raise InsecureSmtp(
                    f"SMTP {self.host}:{self.port} does not offer STARTTLS: refusing to send the credentials "
                    "in clear (use smtps://, or a server that offers STARTTLS)"
                )
        except BaseException:
            client.close()
            raise
        return client
