"""Builders of valid messages for tests; each test changes only what it is about."""

from __future__ import annotations

import json
from typing import Any


def submission(
    order_id: str = "A-1001", *items: tuple[str, int], token: str = "tok_visa", method: str = "credit_card"
) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer": {"customer_id": "C-1", "name": "Alice", "email": "alice@example.com"},
        "items": [{"sku": sku, "quantity": quantity} for sku, quantity in (items or [("SKU-1", 2)])],
        "payment": {"method": method, "token": token},
    }


def body(data: Any) -> bytes:
    return json.dumps(data).encode()
