"""Logging with correlation: every line about an order names the worker, the message and the order."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

_worker: str | None = None  # one per process, so a global rather than a (per-thread) context variable
_message_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("message_id", default=None)
_order_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("order_id", default=None)


@contextmanager
def message_context(*, message_id: str | None, order_id: str | None) -> Iterator[None]:
    """Tag every log line inside the block with the message and order it is about."""
    tokens = (_message_id.set(message_id), _order_id.set(order_id))
    try:
        yield
    finally:
        _message_id.reset(tokens[0])
        _order_id.reset(tokens[1])


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = _worker
        record.message_id = _message_id.get()
        record.order_id = _order_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers and for grep by order id."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("worker", "message_id", "order_id"):
            if value := getattr(record, key, None):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the same correlation fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = " ".join(
            f"{key}={value}"
            for key in ("worker", "order_id", "message_id")
            if (value := getattr(record, key, None))
        )
        return f"{line} [{tags}]" if tags else line


def configure(worker: str | None = None, level: str = "INFO") -> None:
    """Set up root logging: JSON lines unless stderr is a terminal."""
    global _worker
    _worker = worker
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if sys.stderr.isatty():
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("pika", "amqp", "kombu", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
