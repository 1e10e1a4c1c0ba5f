"""Secrets are never shown: a payment token (`payment.token` of a submission, `token` of a
`ChargePayment`) is masked wherever a message is shown to a person, keeping its last four
characters at most, enough to tell two apart. What is sent on (a replay) is never redacted.

A key is secret if it is `token` or ends in `_token`, in any case. JSON is redacted by structure,
keeping the text as it was around the secrets; text that is not JSON (truncated, or not UTF-8)
is redacted by pattern, so a body that breaks its contract still hides its token.
"""

from __future__ import annotations

import json
import re
from typing import Any

MASK = "***"
# A secret shorter than this is masked whole: four characters of it would be too much of it.
_SHOW_TAIL_FROM = 12
_KEY = r"(?:\w*_)?token"
_SECRET_PATTERNS = (
    # "token": "value" (in JSON, or what is left of it), up to the closing quote or the end.
    re.compile(rf'(?P<key>"{_KEY}"\s*:\s*")(?P<value>(?!\*\*\*)(?:[^"\\]|\\.)*)', re.IGNORECASE),
    # The same in JSON carried as a string inside JSON: \"token\": \"value\"
    re.compile(rf'(?P<key>\\"{_KEY}\\"\s*:\s*\\")(?P<value>(?!\*\*\*)(?:(?!\\").)*)', re.IGNORECASE),
    # A key and its value in a Python repr or a query string: 'token': 'value', token=value.
    re.compile(rf"(?P<key>'{_KEY}'\s*:\s*'?|\b{_KEY}=)(?P<value>(?!\*\*\*)[^'\"\s,;&}}]+)", re.IGNORECASE),
)


def mask(secret: str) -> str:
    """`***` and, for a secret long enough, its last four characters."""
    return MASK + secret[-4:] if len(secret) >= _SHOW_TAIL_FROM else MASK


def is_secret(key: str) -> bool:
    lowered = key.lower()
    return lowered == "token" or lowered.endswith("_token")


def redact(document: Any) -> Any:
    """A copy of a decoded JSON document with the value of every secret key masked."""
    if isinstance(document, dict):
        return {
            key: _masked_value(value) if isinstance(key, str) and is_secret(key) else redact(value)
            for key, value in document.items()
        }
    if isinstance(document, list):
        return [redact(item) for item in document]
    return document


def redact_text(text: str) -> str:
    """`text` with every secret masked: by structure if it is JSON, else by pattern."""
    try:
        return _by_pattern(_by_structure(text))
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python recurses
        return _by_pattern(text)


def redact_bytes(body: bytes) -> bytes:
    """A message body with every secret masked; UTF-8 text stays UTF-8, other bytes stay as they were
    around the secrets."""
    try:
        return redact_text(body.decode("utf-8")).encode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        # JSON in UTF-16 or UTF-32
        return json.dumps(redact(json.loads(body)), ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError):
        # latin-1 maps every byte to one character and back, so only the secrets change.
        return _by_pattern(body.decode("latin-1")).encode("latin-1")


def _by_structure(text: str) -> str:
    document = json.loads(text)
    redacted = redact(document)
    if redacted == document:
        return text  # no secret key (JSON carried in a string may still hold one: see the patterns)
    in_place = text
    for secret in _secret_strings(document):
        for literal in {json.dumps(secret), json.dumps(secret, ensure_ascii=False)}:
            in_place = in_place.replace(literal, json.dumps(mask(secret)))
    try:
        if json.loads(in_place) == redacted:
            return in_place
    except ValueError:
        pass
    # The secret was written some other way (escaped differently, not a string): write it anew.
    return json.dumps(redacted, ensure_ascii=False)


def _masked_value(value: Any) -> Any:
    if value is None:
        return None
    return mask(value) if isinstance(value, str) else MASK


def _secret_strings(document: Any) -> list[str]:
    if isinstance(document, dict):
        found = []
        for key, value in document.items():
            if isinstance(key, str) and is_secret(key) and isinstance(value, str):
                found.append(value)
            else:
                found.extend(_secret_strings(value))
        return found
    if isinstance(document, list):
        return [secret for item in document for secret in _secret_strings(item)]
    return []


def _by_pattern(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m["key"] + mask(m["value"]), text)
    return text
