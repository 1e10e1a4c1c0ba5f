"""No traceback reaches a person: bad input, a bad setting, RabbitMQ or the store out of reach each end
a command with one line on stderr and the documented exit code, and never show a password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port

ORDERFLOW = str(Path(sys.executable).with_name("orderflow"))
SECRET = "pa55word"
USAGE, UNAVAILABLE = 2, 4


def orderflow(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_")}
    return subprocess.run(
        [ORDERFLOW, *args], env={**env, **environment}, capture_output=True, text=True, timeout=120
    )


def said_once(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The one line a failed command printed, checked: its exit code, no traceback, no secret."""
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout
    (line,) = result.stderr.strip().splitlines()
    for word in words:
        assert word in line
    return line


@pytest.mark.parametrize(
    "command",
    [("status", "A-1"), ("worker", "order"), ("run",), ("dlq", "list")],
    ids=["command", "worker", "run", "dlq"],
)
def test_a_bad_setting_stops_any_command_with_one_line(command: tuple[str, ...]) -> None:
    result = orderflow(*command, ORDERFLOW_STEP_TIMEOUT="abc")
    said_once(result, USAGE, "ORDERFLOW_STEP_TIMEOUT='abc'", "valid number")


def test_a_url_that_is_not_one_is_a_bad_setting() -> None:
    result = orderflow("dlq", "list", ORDERFLOW_AMQP_URL=f"http://guest:{SECRET}@127.0.0.1/")
    said_once(result, USAGE, "ORDERFLOW_AMQP_URL", "amqp://")


@pytest.mark.parametrize(
    "command",
    [("dlq", "list"), ("stock", "set", "SKU-1", "--quantity", "1", "--price", "1.00"), ("submit", "-")],
    ids=["dlq", "stock", "submit"],
)
def test_rabbitmq_out_of_reach_is_said_in_one_line(command: tuple[str, ...]) -> None:
    url = f"amqp://guest:{SECRET}@127.0.0.1:{free_port()}/%2F"
    result = subprocess.run(
        [ORDERFLOW, *command],
        # The administrative URL, which every role falls back to, out of reach.
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("ORDERFLOW_AMQP_URL_")},
            "ORDERFLOW_AMQP_URL": url,
        },
        input='{"order_id": "A-1"}',
        capture_output=True,
        text=True,
        timeout=120,
    )
    said_once(result, UNAVAILABLE, "cannot reach RabbitMQ", "guest:***@", "ORDERFLOW_AMQP_URL")


def test_the_store_out_of_reach_is_said_in_one_line() -> None:
    url = f"mongodb://admin:{SECRET}@127.0.0.1:{free_port()}/"
    result = orderflow("status", "A-1", ORDERFLOW_MONGO_URL=url)
    said_once(result, UNAVAILABLE, "cannot reach the store", "admin:***@", "ORDERFLOW_MONGO_URL")


def test_rabbitmq_refusing_the_login_is_a_bad_setting() -> None:
    result = orderflow("dlq", "list", ORDERFLOW_AMQP_URL=f"amqp://guest:{SECRET}@127.0.0.1:5672/%2F")
    said_once(result, USAGE, "refused", "ORDERFLOW_AMQP_URL")


def test_bad_input_is_said_in_one_line(tmp_path: Path) -> None:
    said_once(orderflow("submit", str(tmp_path / "missing.json")), USAGE, "missing.json", "No such file")
    said_once(orderflow("stock", "set", "SKU-1", "--quantity", "1", "--price", "1.234"), USAGE, "--price")
    said_once(orderflow("dlq", "list", "no-such-queue"), USAGE, "no dead-letter queue for 'no-such-queue'")
    (tmp_path / "latin1.json").write_bytes(b'{"order_id": "\xe9"}')
    said_once(orderflow("submit", str(tmp_path / "latin1.json")), USAGE, "not UTF-8")


def test_the_operators_own_url_is_named_when_it_is_out_of_reach() -> None:
    url = f"amqp://operator:{SECRET}@127.0.0.1:{free_port()}/%2F"
    result = orderflow("dlq", "list", ORDERFLOW_AMQP_URL_OPERATOR=url)
    said_once(result, UNAVAILABLE, "cannot reach RabbitMQ", "operator:***@", "ORDERFLOW_AMQP_URL_OPERATOR")


def test_a_role_without_the_rights_a_command_needs_is_refused_in_one_line() -> None:
    subscriber = os.environ.get("ORDERFLOW_AMQP_URL_SUBSCRIBER")
    if subscriber is None:
        pytest.skip("no broker users of their own: run `make services`")
    # The operator's command run with the subscriber's credentials, as a misconfigured job would.
    result = orderflow("topology", "declare", ORDERFLOW_AMQP_URL_OPERATOR=subscriber)
    said_once(result, USAGE, "refused", "ACCESS_REFUSED", "ORDERFLOW_AMQP_URL_OPERATOR")
