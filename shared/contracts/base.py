"""What every message shares: an id, a correlation id, a timestamp and a schema version; and the
shapes of the ids and addresses messages carry, each defined here once.

Every id is a short token: a letter or digit, then letters, digits and `._:-` (a customer id also
`@`), so no id can carry a space, a comma, a CR or LF into a mail header (the subject names the
order, the Message-ID the event), a log line or a store key. The patterns are what the intake has
accepted since the first release, and what the system generates (UUIDs from `new_id` and
`derive_id`, `cli-<hex>` request ids, `case-<hex>` case ids); a stricter one would dead-letter
messages an earlier release sent (docs/upgrading.md).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, EmailStr, Field

MAX_ID_LENGTH = 64
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}"

# As upstreams name orders (the intake has always accepted these). No `/`: keys below rely on it.
ORDER_ID_PATTERN = rf"^{_TOKEN}$"
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# Upstreams may key their customers by an address, hence `@`.
CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$"
# A request's id: the body's `request_id`, the AMQP message id, `cli-<hex>`, or a derived UUID.
REQUEST_ID_PATTERN = rf"^{_TOKEN}$"
# A support case's id: `case-<12 hex>` as the CLI names it.
CASE_ID_PATTERN = rf"^{_TOKEN}$"
# A message's or event's id: a UUID (`new_id`, `derive_id`), or the request id it carries.
MESSAGE_ID_PATTERN = rf"^{_TOKEN}$"
# An id under an order: the order id itself, or a path below it, as the order names a change's
# hold and charge (`<order id>/change/<n>`) and its refund (`<order id>/change/<n>/refund`).
MAX_KEY_LENGTH = 200
ORDER_KEY_PATTERN = rf"^{_TOKEN}(?:/[A-Za-z0-9][A-Za-z0-9._:-]{{0,63}}){{0,3}}$"

OrderId = Annotated[str, Field(pattern=ORDER_ID_PATTERN, max_length=MAX_ID_LENGTH)]
Sku = Annotated[str, Field(pattern=SKU_PATTERN, max_length=MAX_ID_LENGTH)]
CustomerId = Annotated[str, Field(pattern=CUSTOMER_ID_PATTERN, max_length=MAX_ID_LENGTH)]
RequestId = Annotated[str, Field(pattern=REQUEST_ID_PATTERN, max_length=MAX_ID_LENGTH)]
CaseId = Annotated[str, Field(pattern=CASE_ID_PATTERN, max_length=MAX_ID_LENGTH)]
MessageId = Annotated[str, Field(pattern=MESSAGE_ID_PATTERN, max_length=MAX_ID_LENGTH)]
OrderKey = Annotated[str, Field(pattern=ORDER_KEY_PATTERN, max_length=MAX_KEY_LENGTH)]

CustomerName = Annotated[str, Field(min_length=1, max_length=200)]
Phone = Annotated[str, Field(min_length=1, max_length=50)]

# RFC 5321's limit on a forward path: no mail system takes a longer address.
MAX_EMAIL_LENGTH = 254


def _bare_address(value: object) -> object:
    if isinstance(value, str):
        if len(value) > MAX_EMAIL_LENGTH:
            raise ValueError(f"an email address has at most {MAX_EMAIL_LENGTH} characters")
        # EmailStr takes "Name <address>" and keeps the address; the system only ever sends the
        # bare address on, so a name here means someone else wrote the message.
        if "<" in value or ">" in value:
            raise ValueError("an email address alone is expected, without a display name")
    return value


# An address as upstreams and operators write it (the intake, `orderflow customers set`):
# `alice@example.com` or `Alice <alice@example.com>`, kept as the bare address, normalised (the
# domain lower-cased, Unicode NFC). Special-use domains (`.invalid`, `.test`, `.local`...) are
# refused, as they have been since the first release: no mail can be delivered there.
SubmittedEmail = EmailStr
# An address as the system sends it on (events, which the notification worker mails): one bare
# address, normalised and checked as SubmittedEmail is, so every address the intake ever stored
# passes, and no list of recipients, CR/LF (a header injection) or display name does.
EmailAddress = Annotated[EmailStr, BeforeValidator(_bare_address)]

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
    message_id: MessageId = Field(default_factory=new_id)
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
