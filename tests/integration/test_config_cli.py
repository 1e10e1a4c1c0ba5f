"""A bad configuration file stops any command, and any worker, with one line naming the file and the
key (exit 2); `orderflow config check` says ok or what is wrong; `config show` never shows a password."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_cli_errors import SECRET, USAGE, orderflow, said_once


@pytest.mark.parametrize(
    "command",
    [("status", "A-1"), ("worker", "order"), ("run",), ("dlq", "list"), ("config", "show")],
    ids=["command", "worker", "run", "dlq", "config-show"],
)
@pytest.mark.parametrize("how", ["option", "variable"])
def test_a_bad_file_stops_any_command_with_one_line(
    tmp_path: Path, command: tuple[str, ...], how: str
) -> None:
    config = tmp_path / "orderflow.toml"
    config.write_text(f'step_timout = 30\namqp_url = "http://guest:{SECRET}@127.0.0.1/"\n')
    if how == "option":
        result = orderflow(*command, "--config", str(config))
    else:
        result = orderflow(*command, ORDERFLOW_CONFIG=str(config))
    said_once(
        result, USAGE, f"{config}: unknown setting 'step_timout' (did you mean step_timeout?)", "amqp_url"
    )


def test_config_check_says_ok_or_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "orderflow.toml"
    config.write_text('step_timeout = 12\ncurrency = "JPY"\n')
    result = orderflow("config", "check", str(config))
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")

    config.write_text('step_timeout = 0\ncurrency = "XYZ"\n')
    line = said_once(orderflow("config", "check", str(config)), USAGE, "step_timeout = 0", "currency = 'XYZ'")
    assert line.count(str(config)) == 2

    # Valid together (the environment wins), but the file itself is not.
    said_once(
        orderflow("config", "check", str(config), ORDERFLOW_STEP_TIMEOUT="5", ORDERFLOW_CURRENCY="USD"), USAGE
    )
    said_once(orderflow("config", "check", str(tmp_path / "missing.toml")), USAGE, "no such file")
    said_once(orderflow("config", "check", ORDERFLOW_BATCH_SIZE="0"), USAGE, "ORDERFLOW_BATCH_SIZE='0'")


def test_config_show_names_each_source_and_never_a_password(tmp_path: Path) -> None:
    config = tmp_path / "orderflow.toml"
    config.write_text(f'smtp_url = "smtp://mailer:{SECRET}@127.0.0.1:2525"\nbatch_size = 10\n')
    result = orderflow(
        "--config",
        str(config),
        "config",
        "show",
        "--json",
        ORDERFLOW_BATCH_SIZE="20",
        ORDERFLOW_CURRENCY="JPY",
    )
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout
    shown = json.loads(result.stdout)["settings"]
    assert shown["batch_size"] == {"value": 20, "source": "environment"}
    assert shown["smtp_url"] == {"value": "smtp://mailer:***@127.0.0.1:2525", "source": "file"}
    assert shown["step_timeout"] == {"value": 30.0, "source": "default"}
