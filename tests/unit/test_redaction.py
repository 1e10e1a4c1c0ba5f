"""Payment tokens are masked wherever a dead letter is shown, whatever its bytes; replay sends them as
they came."""

from __future__ import annotations

import base64
import json

import dramatiq
import pytest

from shared.contracts import saga
from shared.messaging import topology
from shared.messaging.dead_letters import DeadLetter
from shared.messaging.delivery import dead_letter_headers
from shared.messaging.routes import actor_name, home_queue
from shared.messaging.saga_bus import DEAD_LETTER_REASON_OPTION
from shared.redaction import mask, redact_bytes, redact_text

TOKEN = "tok_live_4242424242429876"  # what a provider's client returns: never to be shown


def submission(token: str = TOKEN) -> dict:
    return {
        "order_id": "A-1",
        "customer": {"customer_id": "C-1", "name": "Alice", "email": "alice@example.com"},
        "items": [{"sku": "SKU-1", "quantity": "2"}],
        "payment": {"method": "credit_card", "token": token},
    }


def test_a_long_token_keeps_its_last_four_characters_and_a_short_one_nothing() -> None:
    assert mask(TOKEN) == "***9876"
    assert mask("tok_visa") == "***"


def test_json_keeps_its_form_around_the_masked_token() -> None:
    text = '{"order_id": "A-1",\n  "payment": {"method": "credit_card", "token": "TOKEN"}, "n": 1.50}'
    text = text.replace("TOKEN", TOKEN)
    assert redact_text(text) == text.replace(TOKEN, "***9876")


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(submission()).encode()[:-30],  # truncated: not JSON any more
        b"\xff\xfe garbage " + json.dumps(submission()).encode(),  # not UTF-8
        json.dumps(submission()).encode("utf-16"),  # JSON, but not UTF-8
        json.dumps({"note": json.dumps(submission())}).encode(),  # JSON carried in a string
        json.dumps({"payment": {"Payment_Token": TOKEN, "token": 424242424242}}).encode(),
        json.dumps([[submission()]]).encode(),
        b"[" * 100_000 + json.dumps(submission()).encode(),  # nested deeper than Python recurses
    ],
    ids=["truncated", "not-utf8", "utf16", "json-in-a-string", "other-keys", "nested", "deep"],
)
def test_no_token_survives_in_any_shape_of_body(body: bytes) -> None:
    shown = redact_bytes(body)
    assert TOKEN.encode() not in shown and TOKEN.encode("utf-16-le") not in shown
    assert b"424242424242" not in shown


def test_a_body_without_secrets_is_shown_exactly_as_it_came() -> None:
    for body in (b"\xff\x00garbage\x80", b'{"a": 1, "a": 2}', b"", b"payment.token: Field required"):
        assert redact_bytes(body) == body


def test_secrets_in_a_repr_or_a_query_string_are_masked_too() -> None:
    assert redact_text(f"declined: {{'token': {TOKEN!r}}}") == "declined: {'token': '***9876'}"
    assert redact_text(f"GET /charge?token={TOKEN}&amount=5") == "GET /charge?token=***9876&amount=5"


def letter(source: str, body: bytes, **properties: object) -> DeadLetter:
    headers = dead_letter_headers(source, source, f"rejected by the gateway: {{'token': {TOKEN!r}}}")
    return DeadLetter(
        id="dl-1",
        queue=topology.dead_letter_queue(source),
        source=source,
        reason=headers["x-orderflow-reason"],
        dead_lettered_at=headers["x-orderflow-dead-lettered-at"],
        body=body,
        headers={**headers, "x-upstream": json.dumps(submission())},
        properties={"content_type": "application/json", "content_encoding": "utf-8", **properties},
    )


def test_an_intake_dead_letter_is_shown_without_its_token_and_replayed_with_it() -> None:
    body = json.dumps(submission()).encode()
    dead = letter(topology.ORDER_INTAKE_QUEUE, body, message_id="m-1", app_id="upstream")
    shown = json.dumps(dead.as_json())
    assert TOKEN not in shown and TOKEN not in dead.preview()
    assert json.loads(dead.as_json()["body"])["payment"]["token"] == "***9876"
    replayed = dead.original()
    assert replayed.body == body, "the real token goes back"
    assert (replayed.content_type, replayed.content_encoding) == ("application/json", "utf-8")
    assert dict(replayed.properties) == {"message_id": "m-1", "app_id": "upstream"}
    assert "x-orderflow-reason" not in replayed.headers


def test_a_charge_payment_dead_letter_is_shown_without_its_token_and_replayed_with_it() -> None:
    charge = saga.ChargePayment(order_id="A-1", amount=500, currency="CNY", method="credit_card", token=TOKEN)
    envelope = dramatiq.Message(
        queue_name=home_queue(saga.ChargePayment),
        actor_name=actor_name(saga.ChargePayment),
        args=(charge.model_dump(mode="json"),),
        kwargs={},
        options={DEAD_LETTER_REASON_OPTION: "gave up"},
    )
    dead = letter(topology.PAYMENT_QUEUE, envelope.encode())
    assert TOKEN not in json.dumps(dead.as_json()) and TOKEN not in dead.preview()
    replayed = json.loads(dead.original().body)
    assert replayed["args"][0]["token"] == TOKEN
    assert DEAD_LETTER_REASON_OPTION not in replayed["options"]


def test_a_dead_letter_that_is_not_utf8_is_shown_as_base64_and_replayed_byte_for_byte() -> None:
    body = b"\xff\xfe\x00\x1b[31m" + b'"token": "' + TOKEN.encode() + b'"'
    dead = letter(topology.ORDER_INTAKE_QUEUE, body, content_encoding="latin-1")
    shown = dead.as_json()
    assert shown["body"] is None and shown["size"] == len(body)
    assert base64.b64decode(shown["body_base64"]) == body.replace(TOKEN.encode(), b"***9876")
    assert dead.preview().startswith(f"({len(body)} bytes, not UTF-8) b'\\xff\\xfe\\x00\\x1b[31m")
    assert dead.original().body == body and dead.original().content_encoding == "latin-1"


def test_a_saga_dead_letter_that_is_not_a_dramatiq_message_goes_back_as_it_came() -> None:
    for body in (b"\xff\x00", b'{"options": []}', b'"text"', b"[" * 100_000):
        assert letter(topology.PAYMENT_QUEUE, body).original().body == body


def test_the_text_preview_escapes_what_a_terminal_would_act_on() -> None:
    preview = letter(topology.ORDER_INTAKE_QUEUE, b"line\n\x1b[2Jcleared").preview()
    assert preview == "line\\n\\x1b[2Jcleared"
