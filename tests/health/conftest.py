"""The session's seeded fleet: a real Prefect server with a realistic cancellation history.

`fleet` seeds it once per session (about 2-3 minutes on a 2-core machine:
~2,800 runs through the bulk APIs, the server's own cancelling timeout, a
server restart, then two really stuck runs from the demo scenarios) and
tears everything down at the end. Its timings are printed to stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.health.history import SeededFleet, seeded_fleet
from tests.helpers import clean_environ, progress_to, run_cli

#: The rendering options every real-server test uses (slow = more than 1.5 s).
REPORT_ARGS = ("report", "--since", "1h", "--slow", "1.5s", "--top", "20")


#: Filled by the `fleet` fixture, printed at the end of the session.
_SEEDED: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _SEEDED:
        terminalreporter.write_line(line)


progress = progress_to("fleet")


@pytest.fixture(scope="session")
def fleet_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SeededFleet, Any]]:
    """The seeded server and the demo environment of its really stuck runs."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the seeded fleet needs Linux (the stuck-run harness reads /proc)")
    pytest.importorskip("prefect", reason="the seeded fleet needs Prefect (pip install -e '.[test]')")
    with seeded_fleet(tmp_path_factory.mktemp("fleet"), progress) as pair:
        fleet = pair[0]
        timings = ", ".join(f"{k}={v}s" for k, v in fleet.timings.items())
        _SEEDED.append(
            f"seeded fleet: {fleet.total_runs} runs, {len(fleet.truth)} cancels, "
            f"{fleet.requests} requests; {timings}"
        )
        yield pair


@pytest.fixture(scope="session")
def fleet(fleet_environment: tuple[SeededFleet, Any]) -> SeededFleet:
    """What was seeded, with the truth read back from the server's state table."""
    return fleet_environment[0]


def doctor(*args: str, api_url: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a subprocess, with only PREFECT_API_URL (and `env`) from the environment."""
    environ = clean_environ(PREFECT_API_URL=api_url, COLUMNS="140", NO_COLOR="1", **env)
    return run_cli(*args, env=environ, timeout=timeout)


@pytest.fixture(scope="session")
def report_document(fleet: SeededFleet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`report --format json --output-file FILE`, sampling the stuck runs, against the seeded fleet."""
    path = tmp_path_factory.mktemp("report") / "report.json"
    started = time.monotonic()
    result = doctor(*REPORT_ARGS, "--format", "json", "--output-file", str(path), api_url=fleet.api_url)
    progress(f"report --format json took {time.monotonic() - started:.1f}s (exit {result.returncode})")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "", "with --output-file, stdout stays empty"
    document: dict[str, Any] = json.loads(Path(path).read_text())
    return document
