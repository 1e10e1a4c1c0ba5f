"""What every message shares: an id, a correlation id, a timestamp and a schema version."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

ORDER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

OrderId = Annotated[str, Field(pattern=ORDER_ID_PATTERN)]
Sku = Annotated[str, Field(pattern=SKU_PATTERN)]
MinorUnits = Annotated[int, Field(ge=0)]
Quantity = Annotated[int, Field(ge=1, le=10_000)]

_NAMESPACE = uuid.UUID("6f0e1c52-3f4e-4d0e-9a57-6a1b3b1f2a10")


def derive_id(*parts: str) -> str:
    """A deterministic message id: re-sending the same logical message yields the same id."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """Envelope of an internal message. Unknown fields are ignored so newer senders stay compatible."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: int = 1
    message_id: str = Field(default_factory=new_id, min_length=1, max_length=64)
    occurred_at: datetime = Field(default_factory=utcnow)

    @property
    def correlation_id(self) -> str:
        return self.message_id


class OrderMessage(Message):
    """A message about one order; the order id is its correlation id."""

    order_id: OrderId

    @property
    def correlation_id(self) -> str:
        return self.order_id
