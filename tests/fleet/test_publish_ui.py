"""The doctor's artifact where people look: the run's page in Prefect's own UI, in headless Chromium.

GIVEN a run stuck in Cancelling on a real server and `scan --publish` run on its host,
WHEN Prefect's UI (the one the installed Prefect serves: `prefect server start --ui`)
shows the run's page, Artifacts tab (the UI served under /v2), and the artifact's page,
THEN the run's page lists the doctor's artifact (its key and description), and the
artifact's page renders the verdict, the blocking line and the fix.

The staging harness starts its server with `--no-ui`; a second `prefect server start
--ui --no-services` on the same SQLite database serves the UI and the API it calls.
The screenshots go to the README's docs/ when `PCD_UPDATE_SCREENSHOT=1`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import chromium, clean_environ, run_cli

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc"),
]

HOST = "vm-worker-7"
DOCS = Path(__file__).resolve().parents[2] / "docs"
SHOTS = {"run": ("fleet-run-page.png", 1400, 820), "artifact": ("fleet-artifact.png", 1400, 1250)}


@dataclass
class UI:
    url: str
    run_id: str
    artifact_id: str
    line: int


def _progress(message: str) -> None:
    sys.__stderr__.write(f"[ui {time.strftime('%H:%M:%S')}] {message}\n")


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    pytest.importorskip("prefect")
    from prefect_cancel_doctor.demo.environment import run_demo_environment
    from prefect_cancel_doctor.demo.harness import free_port, prefect_command

    with run_demo_environment(["sleep"], _progress) as staged:
        home = tmp_path_factory.mktemp("home")
        env = clean_environ(PREFECT_API_URL=staged.api_url, PREFECT_HOME=str(home), PCD_HOST=HOST)
        done = run_cli("scan", "--publish", "--samples", "2", env=env)
        assert done.returncode == 1 and "published 1 verdict event(s), 1 artifact(s)" in done.stderr, (
            done.stderr
        )
        harness, run = staged.harness, staged.run("sleep")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server_env = harness.child_env(
            {
                "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{harness.home / 'prefect.db'}",
                "PREFECT_UI_API_URL": f"{url}/api",
                "PREFECT_SERVER_UI_ENABLED": "true",
            }
        )
        command = [*prefect_command(), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        with (harness.logs_dir / "ui-server.log").open("ab") as log:
            server = subprocess.Popen(
                [*command, "--ui", "--no-services", "--analytics-off"],
                env=server_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            harness.wait_until(lambda: _healthy(f"{url}/api/health"), 120, "the UI server")
            (artifact,) = httpx.post(
                f"{url}/api/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run.run_id]}}}
            ).json()
            yield UI(url, run.run_id, artifact["id"], run.line)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(15)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _browse(url: str, shot: Path | None = None, size: tuple[int, int] = (1400, 1000)) -> str:
    """The page's text once its scripts ran (and a screenshot of it): what someone opening it reads."""
    common = [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--no-first-run", "--disable-background-networking", "--virtual-time-budget=30000"]  # fmt: skip
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    if shot is not None:
        size_flag = f"--window-size={size[0]},{size[1]}"
        done = subprocess.run(
            [*common, size_flag, f"--screenshot={shot}", url], capture_output=True, timeout=180
        )
        assert done.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return " ".join(re.sub(r"<[^>]+>", " ", dom.stdout).split())


def _keep(shot: Path, name: str) -> None:
    if os.environ.get("PCD_UPDATE_SCREENSHOT") == "1":
        shutil.copy(shot, DOCS / name)


def test_the_runs_page_lists_the_doctors_artifact(ui: UI, tmp_path: Path) -> None:
    name, width, height = SHOTS["run"]
    shot = tmp_path / name
    text = _browse(f"{ui.url}/v2/runs/flow-run/{ui.run_id}?tab=Artifacts", shot, (width, height))
    assert "Cancelling" in text
    assert f"cancel-doctor-{ui.run_id[:13]}" in text
    assert f"cancel_not_observed: diagnosed by prefect-cancel-doctor on {HOST}" in text
    assert 40_000 < len(shot.read_bytes()) < 400_000  # a page, not a blank screen
    _keep(shot, name)


def test_the_artifact_page_renders_the_verdict_stack_and_fix(ui: UI, tmp_path: Path) -> None:
    name, width, height = SHOTS["artifact"]
    shot = tmp_path / name
    text = _browse(f"{ui.url}/artifacts/artifact/{ui.artifact_id}", shot, (width, height))
    assert "Why this run has not cancelled: cancel_not_observed" in text
    assert f"on host {HOST}" in text
    assert f"stuck_sleep.py:{ui.line}" in text
    assert "End it now" in text and "Fix" in text and "Stack of the blocking thread" in text
    assert 40_000 < len(shot.read_bytes()) < 600_000
    _keep(shot, name)
