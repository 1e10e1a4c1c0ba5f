"""`orderflow config show` and `orderflow config check`: the effective settings and where each came
from (its default, the configuration file, the environment), and a configuration file checked."""

from __future__ import annotations

import json
from typing import Any

from shared.settings import Settings, check_config_file, config_file, masked, origins


def show(settings: Settings, as_json: bool) -> int:
    """Print every setting, its value (any password in it masked) and where it came from."""
    where = origins()
    values = {name: _masked(value) for name, value in settings.model_dump(mode="json").items()}
    path = config_file()
    if as_json:
        document = {
            "file": None if path is None else str(path),
            "settings": {name: {"value": value, "source": where[name]} for name, value in values.items()},
        }
        print(json.dumps(document, indent=2))
        return 0
    print(f"configuration file: {path or 'none'}")
    texts = {name: "(unset)" if value is None else str(value) for name, value in values.items()}
    name_width, value_width = max(map(len, texts)), max(map(len, texts.values()))
    for name, text in texts.items():
        print(f"{name:<{name_width}}  {text:<{value_width}}  {where[name]}")
    return 0


def check() -> int:
    """The environment and the configuration file were valid together (or the command would have
    stopped before this); check every value of the file in itself too."""
    check_config_file()
    print("ok")
    return 0


def _masked(value: Any) -> Any:
    return masked(value) if isinstance(value, str) else value
