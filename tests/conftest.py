from __future__ import annotations

from collections.abc import Callable

import pytest

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
