from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from shared import sandbox

# The whole suite runs as production does: each worker, the CLI and the tests' own publishers and
# subscribers as the broker user of their role (`make services` creates them), unless the
# environment names other URLs.
for variable, url in sandbox.local_role_urls().items():
    os.environ.setdefault(variable, url)

_FIGURES: list[str] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.path)
        if "/integration/" in path:
            item.add_marker(pytest.mark.integration)
        elif "/e2e/" in path or "/faults/" in path:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def figure() -> Callable[[str], None]:
    """Record a measured figure, printed at the end of the run whatever pytest captures."""
    return _FIGURES.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("measured")
        for line in _FIGURES:
            terminalreporter.write_line(line)
