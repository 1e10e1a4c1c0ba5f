"""Settings: a bad one is named in one line without its password; metrics ports of `orderflow run`."""

from __future__ import annotations

import pytest

from shared.errors import SettingError
from shared.settings import SERVICES, Settings, load_settings, masked


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("ORDERFLOW_STEP_TIMEOUT", "abc", "ORDERFLOW_STEP_TIMEOUT='abc': Input should be a valid number"),
        ("ORDERFLOW_AMQP_URL", "http://guest:s3cret@host/", "ORDERFLOW_AMQP_URL='http://guest:***@host/'"),
        ("ORDERFLOW_AMQP_URL", "localhost", "not a URL of amqp:// or amqps://"),
        ("ORDERFLOW_MONGO_URL", "127.0.0.1:27017", "not a URL of mongodb:// or mongodb+srv://"),
        ("ORDERFLOW_SMTP_URL", "mail.example.com", "not a URL of smtp:// or smtps://"),
        (
            "ORDERFLOW_METRICS_PORT",
            "-1",
            "ORDERFLOW_METRICS_PORT='-1': Input should be greater than or equal to 0",
        ),
    ],
)
def test_a_bad_setting_is_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, said: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingError) as raised:
        load_settings()
    assert said in str(raised.value)
    assert "\n" not in str(raised.value) and "s3cret" not in str(raised.value)


def test_good_urls_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERFLOW_AMQP_URL", "amqps://user:pw@rabbit.internal:5671/orders")
    monkeypatch.setenv("ORDERFLOW_MONGO_URL", "mongodb://a:27017,b:27017/?replicaSet=rs0")
    monkeypatch.setenv("ORDERFLOW_SMTP_URL", "smtps://relay.example.com")
    assert load_settings().mongo_url.startswith("mongodb://a:27017,b")


def test_orderflow_run_gives_each_pool_the_metrics_port_plus_its_place() -> None:
    assert [Settings(metrics_port=9200).metrics_port_of(s, all_pools=True) for s in SERVICES] == [
        9200,
        9201,
        9202,
        9203,
        9204,
    ]
    assert Settings(metrics_port=9200).metrics_port_of("payment") == 9200, "one pool alone: the port as set"
    assert [Settings().metrics_port_of(s, all_pools=True) for s in SERVICES] == [9101, 9102, 9103, 9104, 9105]
    with pytest.raises(SettingError, match="at most 65531"):
        Settings(metrics_port=65533).metrics_port_of("reporting", all_pools=True)
    assert {Settings(metrics_port=0).metrics_port_of(s, all_pools=True) for s in SERVICES} == {0}, "any free"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("amqp://guest:guest@rabbit/%2F", "amqp://guest:***@rabbit/%2F"),
        ("smtp://mailer:p@ss@relay:587", "smtp://mailer:***@relay:587"),  # an @ in the password
        (
            "mongo_url = 'orders:s3cret@mongo:27017': not a URL",
            "mongo_url = 'orders:***@mongo:27017': not a URL",
        ),
        ("mongodb://127.0.0.1:27017/", "mongodb://127.0.0.1:27017/"),
        ("alice@example.com", "alice@example.com"),
    ],
)
def test_no_password_is_ever_shown(text: str, shown: str) -> None:
    assert masked(text) == shown
