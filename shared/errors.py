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


# Errors a person sees: `orderflow` prints the message as one line and exits with the code.


class CommandError(OrderflowError):
    """A command cannot do what it was asked (exit 1)."""

    exit_code = 1


class UsageError(CommandError):
    """Bad input: an argument, a file, a queue name (exit 2, as for a bad command line)."""

    exit_code = 2


class SettingError(UsageError):
    """An ORDERFLOW_* setting is invalid (exit 2)."""


class ServiceUnavailable(CommandError):
    """RabbitMQ or the store cannot be reached, or did not answer in time (exit 4): try again later."""

    exit_code = 4
