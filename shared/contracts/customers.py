"""Commands about customers, sent by `orderflow customers ...` to the order worker, which owns them.

Each command's `message_id` is its idempotency key: the customer remembers the last commands it
applied, so a redelivered one changes nothing twice, and the CLI waits until its own shows there.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.contracts.base import CustomerId, CustomerName, Message, Phone, SubmittedEmail

DETAILS = ("name", "email", "phone", "address")


class _CustomerCommand(Message):
    customer_id: CustomerId

    @property
    def correlation_id(self) -> str:
        return self.customer_id


class UpdateCustomer(_CustomerCommand):
    """Set the details given (None leaves one as it is); creates the customer if it has no record."""

    name: CustomerName | None = None
    email: SubmittedEmail | None = None  # as on the intake: README, `orderflow customers set`
    phone: Phone | None = None
    address: str | None = Field(default=None, min_length=1, max_length=500)

    @model_validator(mode="after")
    def _some_detail(self) -> UpdateCustomer:
        if all(getattr(self, detail) is None for detail in DETAILS):
            raise ValueError(f"nothing to set: give at least one of {', '.join(DETAILS)}")
        return self

    def details(self) -> dict[str, str]:
        """The details this command sets."""
        return {detail: value for detail in DETAILS if (value := getattr(self, detail)) is not None}


class ForgetCustomer(_CustomerCommand):
    """Erase the customer's personal data from its record and from every one of its orders; the
    orders keep their lines, amounts and statuses."""
