"""Money is an integer count of minor units inside the system; decimal strings at the edges.

How many minor units make one major unit depends on the currency (ISO 4217): 1 for JPY,
100 for CNY, 1000 for KWD. Every conversion names its currency.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# ISO 4217 List One: the decimal places of each active currency's minor unit. Codes without one
# (precious metals, XDR, XTS, XXX) are left out: no price is ever set in them. A code ISO adds later
# needs a line here before it can be configured.
_EXPONENT_0 = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_EXPONENT_2 = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD "
    "CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS "
    "GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL "
    "MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK "
    "PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS "
    "TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
)
_EXPONENT_3 = "BHD IQD JOD KWD LYD OMR TND"
_EXPONENT_4 = "CLF UYW"

EXPONENTS: dict[str, int] = {
    code: exponent
    for exponent, codes in ((0, _EXPONENT_0), (2, _EXPONENT_2), (3, _EXPONENT_3), (4, _EXPONENT_4))
    for code in codes.split()
}

# Minor units are stored as 64-bit integers (BSON int64): a larger amount cannot be kept exactly.
MAX_MINOR = 2**63 - 1


class UnknownCurrency(ValueError):
    """A code that is not an ISO 4217 currency with a minor unit."""


class InvalidAmount(ValueError):
    """A decimal string that is not a valid, non-negative amount in the currency's minor units."""


def exponent(currency: str) -> int:
    """The decimal places of a currency's minor unit: 0 for JPY, 2 for CNY, 3 for KWD."""
    try:
        return EXPONENTS[currency]
    except KeyError:
        raise UnknownCurrency(
            f"unknown currency {currency!r}: expected an ISO 4217 code such as CNY, USD, EUR or JPY"
        ) from None


def to_minor(amount: str | Decimal, currency: str) -> int:
    """Parse a decimal amount into minor units of the currency: "12.50" CNY -> 1250, "1500" JPY -> 1500."""
    places = exponent(currency)
    try:
        value = Decimal(str(amount).strip())
    except InvalidOperation as e:
        raise InvalidAmount(f"not a decimal amount: {amount!r}") from e
    if not value.is_finite() or value < 0:
        raise InvalidAmount(f"amount must be a non-negative number: {amount!r}")
    # Exact integer arithmetic: Decimal multiplication rounds to 28 digits and could drop a cent.
    _, digits, power = value.as_tuple()
    assert isinstance(power, int)  # finite, checked above
    coefficient = int("".join(map(str, digits)))
    shift = power + places
    if coefficient and len(digits) + shift > len(str(MAX_MINOR)):
        raise InvalidAmount(f"amount too large: {amount!r}")
    if shift >= 0:
        minor = coefficient * 10**shift
    else:
        minor, rest = divmod(coefficient, 10**-shift)
        if rest:
            raise InvalidAmount(f"amount has more decimals than {currency} allows ({places}): {amount!r}")
    if minor > MAX_MINOR:
        raise InvalidAmount(f"amount too large: {amount!r}")
    return minor


def to_signed_minor(amount: str, currency: str) -> int:
    """Parse a signed decimal amount (a difference: "12.50" charged, "-12.50" refunded) into minor units."""
    text = amount.strip()
    return -to_minor(text[1:], currency) if text.startswith("-") else to_minor(text, currency)


def to_decimal_string(minor: int, currency: str) -> str:
    """Format minor units of the currency as a decimal string: 1250 CNY -> "12.50", 1500 JPY -> "1500"."""
    places = exponent(currency)
    sign = "-" if minor < 0 else ""
    if places == 0:
        return f"{sign}{abs(minor)}"
    whole, fraction = divmod(abs(minor), 10**places)
    return f"{sign}{whole}.{fraction:0{places}d}"
