"""The configuration file: the environment wins over it, it over the defaults; an unknown key, a wrong
type or a bad value in it is named with the file; `orderflow config show` never shows a password."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services import config_cli
from services.cli import build_parser
from shared.errors import SettingError
from shared.settings import check_config_file, load_settings, origins


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A configuration file ORDERFLOW_CONFIG names, empty until a test writes it."""
    for variable in ("ORDERFLOW_STEP_TIMEOUT", "ORDERFLOW_SWEEP_INTERVAL", "ORDERFLOW_AMQP_URL"):
        monkeypatch.delenv(variable, raising=False)
    path = tmp_path / "orderflow.toml"
    path.write_text("")
    monkeypatch.setenv("ORDERFLOW_CONFIG", str(path))
    return path


def test_the_environment_wins_over_the_file_and_the_file_over_the_defaults(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write_text('step_timeout = 12\nsweep_interval = 7.5\ncurrency = "JPY"\n')
    monkeypatch.setenv("ORDERFLOW_STEP_TIMEOUT", "3")
    settings = load_settings()
    assert (settings.step_timeout, settings.sweep_interval, settings.currency) == (3.0, 7.5, "JPY")
    assert settings.max_retries == 5
    where = origins()
    assert (where["step_timeout"], where["sweep_interval"], where["max_retries"]) == (
        "environment",
        "file",
        "default",
    )


def test_without_a_file_every_setting_is_a_default_or_the_environments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ORDERFLOW_CONFIG", raising=False)
    monkeypatch.setenv("ORDERFLOW_BATCH_SIZE", "10")
    assert load_settings().batch_size == 10
    assert {origin for name, origin in origins().items() if name != "batch_size"} <= {
        "default",
        "environment",
    }
    assert origins()["batch_size"] == "environment"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("step_timout = 30", "unknown setting 'step_timout' (did you mean step_timeout?)"),
        ("STEP_TIMEOUT = 30", "unknown setting 'STEP_TIMEOUT' (did you mean step_timeout?)"),
        ("[order]\nstep_timeout = 30", "unknown setting 'order'"),
        ('step_timeout = "soon"', "step_timeout = 'soon': Input should be a valid number"),
        ("step_timeout = 0", "step_timeout = 0: Input should be greater than 0"),
        ("batch_size = [1, 2]", "batch_size = [1, 2]: Input should be a valid integer"),
        ('currency = "XYZ"', "currency = 'XYZ': unknown currency 'XYZ'"),
        (
            'amqp_url = "http://guest:s3cret@host/"',
            "amqp_url = 'http://guest:***@host/': not a URL of amqp://",
        ),
    ],
)
def test_a_bad_file_is_named_with_the_key_in_one_line(config: Path, text: str, said: str) -> None:
    config.write_text(text + "\n")
    with pytest.raises(SettingError) as raised:
        load_settings()
    assert f"{config}: {said}" in str(raised.value)
    assert "\n" not in str(raised.value) and "s3cret" not in str(raised.value)


def test_every_problem_of_a_file_is_said_at_once(config: Path) -> None:
    config.write_text('step_timout = 30\nmax_retries = -1\ncurrency = "XYZ"\n')
    with pytest.raises(SettingError) as raised:
        load_settings()
    assert {"step_timout", "max_retries", "currency"} <= {
        word.strip("'") for problem in str(raised.value).split("; ") for word in problem.split()
    }


@pytest.mark.parametrize(
    ("text", "said"), [(None, "no such file"), ("step_timeout = ", "not TOML"), ("\xff = 1", "not TOML")]
)
def test_a_file_that_cannot_be_read_is_a_bad_setting(config: Path, text: str | None, said: str) -> None:
    if text is None:
        config.unlink()
    else:
        config.write_bytes(text.encode("latin-1"))
    with pytest.raises(SettingError, match=f"configuration file {config}: {said}"):
        load_settings()


def test_a_bad_value_the_environment_overrides_still_fails_the_check(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write_text("step_timeout = -1\n")
    monkeypatch.setenv("ORDERFLOW_STEP_TIMEOUT", "5")
    assert load_settings().step_timeout == 5.0, "what runs is valid"
    with pytest.raises(SettingError, match=f"{config}: step_timeout = -1: Input should be greater than 0"):
        check_config_file()
    config.write_text("step_timeout = 9\n")
    check_config_file()


def test_config_show_says_where_each_setting_came_from_and_masks_passwords(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config.write_text('smtp_url = "smtp://mailer:f1lesecret@mail.example.com:587"\nstep_timeout = 12\n')
    monkeypatch.setenv("ORDERFLOW_AMQP_URL", "amqp://orders:envsecret@rabbit:5672/%2F")
    settings = load_settings()

    assert config_cli.show(settings, as_json=True) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["file"] == str(config)
    assert shown["settings"]["smtp_url"] == {
        "value": "smtp://mailer:***@mail.example.com:587",
        "source": "file",
    }
    assert shown["settings"]["amqp_url"] == {
        "value": "amqp://orders:***@rabbit:5672/%2F",
        "source": "environment",
    }
    assert shown["settings"]["step_timeout"] == {"value": 12.0, "source": "file"}
    assert shown["settings"]["metrics_port"] == {"value": None, "source": "default"}
    assert set(shown["settings"]) == set(type(settings).model_fields)

    assert config_cli.show(settings, as_json=False) == 0
    text = capsys.readouterr().out
    assert "secret" not in text
    assert text.splitlines()[0] == f"configuration file: {config}"
    assert any(line.split()[0] == "step_timeout" and line.split()[-1] == "file" for line in text.splitlines())


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "a.toml", "status", "A-1"],
        ["status", "A-1", "--config", "a.toml"],
        ["stock", "--config", "a.toml", "show"],
        ["worker", "order", "--config", "a.toml"],
        ["config", "show", "--config", "a.toml"],
    ],
)
def test_config_is_an_option_of_every_command_before_or_after_it(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).config == "a.toml"
    assert build_parser().parse_args([a for a in argv if a not in ("--config", "a.toml")]).config is None
