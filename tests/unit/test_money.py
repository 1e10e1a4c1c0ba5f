import pytest

from shared.money import InvalidAmount, to_decimal_string, to_minor


@pytest.mark.parametrize(
    ("text", "minor"), [("12.50", 1250), ("3", 300), ("0.01", 1), ("0", 0), (" 7.5 ", 750)]
)
def test_decimal_strings_become_minor_units(text: str, minor: int) -> None:
    assert to_minor(text) == minor


@pytest.mark.parametrize("text", ["1.001", "-1", "abc", "NaN", "Infinity", ""])
def test_invalid_amounts_are_refused(text: str) -> None:
    with pytest.raises(InvalidAmount):
        to_minor(text)


@pytest.mark.parametrize(("minor", "text"), [(1250, "12.50"), (5, "0.05"), (0, "0.00"), (-150, "-1.50")])
def test_minor_units_format_as_decimal_strings(minor: int, text: str) -> None:
    assert to_decimal_string(minor) == text
