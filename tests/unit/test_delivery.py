import pytest

from shared.messaging.exchanges import ATTEMPTS_HEADER, Delivery


@pytest.mark.parametrize(
    ("header", "attempt"), [(None, 1), (2, 3), ("3", 4), ("garbage", 1), (-5, 1), ([1], 1)]
)
def test_a_delivery_counts_its_attempts_whatever_the_header_holds(header: object, attempt: int) -> None:
    headers = {} if header is None else {ATTEMPTS_HEADER: header}
    assert Delivery(body=b"", content_type=None, routing_key="", headers=headers).attempt == attempt
