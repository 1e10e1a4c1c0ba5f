"""The error hierarchy every worker shares: permanent errors are dead-lettered, transient ones retried."""

from __future__ import annotations


class OrderflowError(Exception):
    """Base of every error Orderflow raises on purpose."""


class PermanentError(OrderflowError):
    """Retrying cannot help (invalid input, a broken contract): dead-letter the message with the reason."""


class InvalidMessage(PermanentError):
    """A message that does not match its contract."""


class TransientError(OrderflowError):
    """A dependency is unavailable for now (broker, store, gateway): retry with backoff."""
