"""`demo --keep`: the demo's server serves Prefect's UI, so the report's UI links open.

GIVEN the demo's local server started as `demo --keep` starts it (`LocalPrefect(ui=True)`)
with a flow run in it,
WHEN the UI's root and the run's page at the link the doctor prints are fetched as a browser
asks for a page,
THEN both answer 200 with the UI's HTML, the UI is told to call this server's API, and what
`--keep` prints holds the UI's address and the `export PREFECT_API_URL=…` line for this server.

The run's page is Prefect's single-page app: the browser's scripts fetch the run from the API
named in `/ui-settings`; that a page renders in Chromium is tests/fleet/test_publish_ui.py's.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from prefect_cancel_doctor.core.links import flow_run_url, ui_base_url

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.environment import DemoEnvironment

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc"),
]

#: What a browser's navigation sends (Prefect's UI app tells pages from API calls by it).
PAGE = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


def _progress(message: str) -> None:
    print(f"[demo-ui {time.strftime('%H:%M:%S')}] {message}", file=sys.__stderr__, flush=True)


@pytest.fixture(scope="module")
def kept() -> Iterator[tuple[DemoEnvironment, str]]:
    """The --keep server (UI on) and the id of a flow run in it."""
    pytest.importorskip("prefect")
    from prefect_cancel_doctor.demo.environment import DemoEnvironment
    from prefect_cancel_doctor.demo.harness import LocalPrefect

    with LocalPrefect(log=_progress, ui=True) as harness:
        harness.create_process_pool("ui")
        deployment = harness.deploy(
            flow_name="ui-check", entrypoint="flow.py:flow", directory=harness.workdir, pool="ui"
        )
        run_id = harness.create_run(deployment, {})
        yield DemoEnvironment(harness=harness, runs=[]), run_id


def _page(url: str) -> httpx.Response:
    return httpx.get(url, headers=PAGE, follow_redirects=True, timeout=30)


def test_the_ui_and_the_runs_page_the_doctor_links_answer_html(kept: tuple[DemoEnvironment, str]) -> None:
    environment, run_id = kept
    harness = environment.harness
    assert harness.ui_url == f"http://127.0.0.1:{harness.port}"

    # the link as the doctor prints it (UI base derived from PREFECT_API_URL)
    link = flow_run_url(ui_base_url(harness.api_url, env={}), run_id)
    assert link == f"{harness.ui_url}/runs/flow-run/{run_id}"

    for url in (f"{harness.ui_url}/", link, f"{harness.ui_url}/v2/runs/flow-run/{run_id}"):
        page = _page(url)
        assert page.status_code == 200, (url, page.status_code, page.text[:300])
        assert page.headers["content-type"].startswith("text/html"), url
        assert "<html" in page.text.lower() and "<script" in page.text.lower(), url

    # the UI's scripts call this server's API
    settings = httpx.get(f"{harness.ui_url}/ui-settings", timeout=30).json()
    assert settings["api_url"] == harness.api_url
    assert harness.ui_served()


def test_keep_prints_the_ui_and_the_export_line_for_this_server(kept: tuple[DemoEnvironment, str]) -> None:
    from prefect_cancel_doctor.demo.run import keep_lines

    environment, _ = kept
    lines = keep_lines(environment)
    text = "\n".join(lines)

    export = [line.strip() for line in lines if line.strip().startswith("export ")]
    assert export == [f"export PREFECT_API_URL={shlex.quote(environment.api_url)}"]
    assert environment.api_url == f"http://127.0.0.1:{environment.harness.port}/api"
    assert f"Prefect UI: {environment.harness.ui_url} " in text
    assert "prefect-cancel-doctor scan" in text and "resolve" in text and "watch" in text
    assert all(len(line) <= 100 for line in lines if "export" not in line)


def test_without_keep_the_harness_serves_no_ui() -> None:
    from prefect_cancel_doctor.demo.harness import LocalPrefect

    # (not started: the default the test suite's many servers use)
    assert LocalPrefect().ui_url is None
