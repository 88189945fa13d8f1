"""Suite-wide rules: in CI a skipped test is a failure, not a pass."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import clean_environ


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") == "true" and skipped:
        if reporter:
            reporter.write_line(f"CI=true: {skipped} test(s) skipped; a skipped test fails CI", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _fixed_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendered output at a known width and without colour."""
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """An environment with no Prefect connection configured (an empty PREFECT_HOME)."""
    return clean_environ(PREFECT_HOME=str(tmp_path))
