"""Money is an integer count of minor units inside the system; decimal strings at the edges."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

MINOR_UNITS = 100  # every currency Orderflow supports today has two decimal places


class InvalidAmount(ValueError):
    """A decimal string that is not a valid, non-negative amount with at most two decimals."""


def to_minor(amount: str | Decimal) -> int:
    """Parse a decimal amount such as "12.50" into minor units (1250)."""
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation as e:
        raise InvalidAmount(f"not a decimal amount: {amount!r}") from e
    if not value.is_finite() or value < 0:
        raise InvalidAmount(f"amount must be a non-negative number: {amount!r}")
    minor = value * MINOR_UNITS
    if minor != minor.to_integral_value():
        raise InvalidAmount(f"amount has more than two decimals: {amount!r}")
    return int(minor)


def to_decimal_string(minor: int) -> str:
    """Format minor units as a decimal string: 1250 -> "12.50"."""
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), MINOR_UNITS)
    return f"{sign}{whole}.{cents:02d}"
