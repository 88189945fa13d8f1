"""Suite-wide rules: in CI a skipped test is a failure, not a pass; what a test needs for real
(a Prefect server, a Docker engine) is a marker it carries; the session's staged servers and engine."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import IN_CI, clean_environ, progress_to, unavailable

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.docker_api import DockerClient
    from prefect_cancel_doctor.demo.environment import DemoEnvironment, StuckRun

#: The session fixtures that bring up something real, and the marker a test using them carries
#: (declared in pyproject.toml; `-m "not real"` leaves out every test marked server or docker).
NEEDS = {
    "demo_environment": "server",
    "fleet_environment": "server",
    "docker_client": "docker",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that uses a real server or Docker says so with its marker; server and docker are real."""
    unmarked = [
        f"{item.nodeid} uses {fixture}: mark it pytest.mark.{marker}"
        for item in items
        for fixture, marker in NEEDS.items()
        if fixture in getattr(item, "fixturenames", ()) and item.get_closest_marker(marker) is None
    ]
    if unmarked:
        raise pytest.UsageError("\n".join(unmarked))
    for item in items:
        if item.get_closest_marker("server") or item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.real)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if IN_CI and skipped:
        if reporter:
            reporter.write_line(f"CI=true: {skipped} test(s) skipped; a skipped test fails CI", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _fixed_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rendered output at a known width and without colour."""
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("NO_COLOR", "1")


@pytest.fixture(autouse=True)
def _settings_restored() -> Iterator[None]:
    """No PCD_* or PREFECT_* variable set by a test outlives it.

    A command invoked in-process (typer's CliRunner) sets some for the processes it
    starts (`agent --host` sets PCD_HOST, `schedule` PREFECT_API_URL): left in this
    process, they reach every later test's children (the fleet's agents all served
    as one host, and its test timed out waiting for theirs).
    """
    ours = ("PCD_", "PREFECT_")
    saved = {key: value for key, value in os.environ.items() if key.startswith(ours)}
    yield
    for key in [key for key in os.environ if key.startswith(ours) and key not in saved]:
        del os.environ[key]
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _no_secret_held() -> Iterator[None]:
    """The secrets one test's clients held (`redact.hold`) are not hidden from the next test's output."""
    yield
    from prefect_cancel_doctor.core.redact import forget

    forget()


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """An environment with no Prefect connection configured (an empty PREFECT_HOME)."""
    return clean_environ(PREFECT_HOME=str(tmp_path))


# -- a real local Prefect server with one really stuck run per scenario ----------------------
#
# Session fixtures: a real local Prefect server with one really stuck run per scenario.
#
# `stuck_runs` brings every scenario of `prefect_cancel_doctor.demo.catalog` up
# once per test session (about 70-90 s on a 2-core machine) and tears it all
# down at the end: server, workers, flow processes and their survivors.
#
# Each value is a `StuckRun`: run id, scenario, expected cause/kind/state, the
# deployed file and its marked line, the expected blocking location, the flow
# PID (and survivor PIDs), the worker's name and PID, the pool and the API URL.
# Progress lines are printed to stderr (visible with `pytest -s`).


_progress = progress_to("stuck-runs")


@pytest.fixture(scope="session")
def demo_environment() -> Iterator[DemoEnvironment]:
    """Every catalog scenario staged for real on one local Prefect server."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the stuck-run harness needs Linux (/proc, process groups)")
    if os.geteuid() != 0:
        # Not needed by the harness itself, but the doctor's tests that use this
        # fixture attach to the processes with py-spy.
        _progress("warning: not root; attaching py-spy to the stuck runs may be refused")
    pytest.importorskip("prefect", reason="the stuck-run harness needs Prefect (pip install -e '.[test]')")

    from prefect_cancel_doctor.demo.environment import run_demo_environment
    from tests.helpers import staged_scenarios

    with run_demo_environment(staged_scenarios(), _progress) as environment:
        _progress("timings (s): " + ", ".join(f"{k}={v}" for k, v in environment.timings.items()))
        yield environment


@pytest.fixture(scope="session")
def stuck_runs(demo_environment: DemoEnvironment) -> dict[str, StuckRun]:
    """Scenario name -> its staged, stuck run."""
    return {run.scenario: run for run in demo_environment.runs}


# -- a real Docker engine (tests/docker, and tests/kubernetes whose pods are its containers) --


@pytest.fixture(scope="session")
def docker_client() -> Iterator[DockerClient]:
    """A client of the real Docker engine (DOCKER_HOST or the default socket).

    Without a usable engine the test skips, except with CI=true, where it fails.
    """
    from prefect_cancel_doctor.clients.docker_api import DockerClient, DockerError

    if not sys.platform.startswith("linux"):
        unavailable("a real Docker engine is needed, on Linux")
    try:
        client = DockerClient(timeout=30.0)
        client.ping()
    except DockerError as exc:
        unavailable(f"no usable Docker engine: {exc} ({exc.hint})")
    with client:
        yield client
