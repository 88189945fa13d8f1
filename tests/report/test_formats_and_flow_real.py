"""Each format of the real report, the report as a Prefect flow (artifact, notification), `schedule`,
and the HTML page in a real headless browser.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.report.conftest import CLI, REPORT_ARGS, doctor, progress
from tests.report.history import Api, SeededFleet, wait_until


@pytest.fixture(scope="module")
def rendered(fleet: SeededFleet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The report in markdown, html and terminal form (not sampled: the JSON test samples)."""
    out = tmp_path_factory.mktemp("formats")
    texts = {}
    for fmt in ("markdown", "html", "terminal"):
        path = out / f"report.{fmt}"
        result = doctor(
            *REPORT_ARGS, "--no-sample", "--format", fmt, "--output", str(path), api_url=fleet.api_url
        )
        assert result.returncode == 0, result.stderr
        texts[fmt] = path.read_text()
    texts["html_path"] = str(out / "report.html")
    return texts


def test_markdown_has_the_tables(rendered: dict[str, str], fleet: SeededFleet) -> None:
    md = rendered["markdown"]
    assert md.startswith("# Cancellation health — last 1h")
    for heading in (
        "## Stuck in Cancelling now",
        "## Time to cancel",
        "## Worst offenders",
        "## By deployment",
        "## By work pool",
        "## By worker",
        "## Suspected orphans",
        "## Cancels ignored",
        "## Sub-deployment runs still live",
        "## Concurrency slots held by stuck runs (1)",
        "## How this was read",
    ):
        assert heading in md, heading
    tables = re.findall(r"^\| .+ \|\n\|(?:-{3}:?\|)+$", md, flags=re.M)
    assert len(tables) >= 10
    assert "| train/gpu |" in md and "| etl-pool |" in md and "| gpu-worker-2 |" in md
    # Every table row has as many cells as its header.
    for block in re.split(r"\n(?!\|)", md):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            widths = {len(re.split(r"(?<!\\)\|", row)) for row in rows}
            assert len(widths) == 1, rows[:3]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.ids: set[str] = set()
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name in ("src", "href") and value and not value.startswith("#"):
                self.external.append(value)
        if tag in ("link", "script", "iframe", "img"):
            self.external.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_one_self_contained_page_with_charts(rendered: dict[str, str]) -> None:
    page = _Page()
    page.feed(rendered["html"])
    assert page.external == [], "the page must load nothing"
    assert not re.search(r"url\(\s*['\"]?https?:|@import", rendered["html"])
    assert page.tags["svg"] >= 3
    for anchor in ("status", "summary", "chart-time-to-cancel", "chart-outcomes", "chart-latency", "stuck",
                   "offenders", "by-deployment", "by-work-pool", "by-worker", "suspected-orphans", "ignored",
                   "children", "slots", "source"):  # fmt: skip
        assert anchor in page.ids, anchor
    text = " ".join(page.text)
    assert "Cancellation health" in text and "train/gpu" in text and "Suspected orphans" in text
    assert page.tags["table"] >= 8


def test_terminal_report_reads_well(rendered: dict[str, str]) -> None:
    text = rendered["terminal"]
    assert text.startswith("Cancellation health — last 1h")
    assert "\x1b[" not in text  # no colour codes in a file
    for title in ("Fleet", "Stuck in Cancelling now", "Time to cancel", "Worst offenders", "By deployment"):
        assert title in text


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium here (apt-get install chromium)")


def test_html_renders_in_a_headless_browser(rendered: dict[str, str], tmp_path: Path) -> None:
    browser = _chromium()
    url = Path(rendered["html_path"]).as_uri()
    common = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--disable-background-networking", "--no-first-run"]  # fmt: skip
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<svg" in dom.stdout and "Cancellation health" in dom.stdout
    shot = tmp_path / "report.png"
    result = subprocess.run(
        [*common, "--window-size=1400,1800", f"--screenshot={shot}", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1400, 1800)
    # A blank page compresses to a few kilobytes; charts and tables do not.
    assert len(png) > 100_000, len(png)
    keep = os.environ.get("PCD_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


# -- the report as a Prefect flow ----------------------------------------------------------------


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        _Hook.received.append(self.rfile.read(length))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[bytes]]]:
    """A local HTTP endpoint that records what a notification block posts to it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Hook.received
    finally:
        server.shutdown()
        server.server_close()


def _prefect_env(fleet: SeededFleet, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PCD_"))}
    env.update(PREFECT_API_URL=fleet.api_url, PREFECT_HOME=str(home), PREFECT_LOGGING_LEVEL="WARNING",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")  # fmt: skip
    return env


def _artifacts(api_url: str, key: str) -> list[dict[str, Any]]:
    body = {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 50}
    api = Api(api_url)
    artifacts: list[dict[str, Any]] = api.call("POST", "artifacts/filter", body)
    api.close()
    return artifacts


def test_the_flow_publishes_a_markdown_artifact_and_notifies(
    fleet: SeededFleet, webhook: tuple[str, list[bytes]], tmp_path: Path
) -> None:
    url, received = webhook
    script = textwrap.dedent(
        f"""
        import json
        from prefect.blocks.notifications import CustomWebhookNotificationBlock
        from prefect_cancel_doctor.flows import cancellation_health_report

        CustomWebhookNotificationBlock(
            name="pcd-e2e", url={url!r}, json_data={{"subject": "{{{{subject}}}}", "text": "{{{{body}}}}"}}
        ).save("pcd-e2e", overwrite=True)
        result = cancellation_health_report(
            since="1h", fail_on=["orphans", "p95-above=1h"], notify_block="custom-webhook/pcd-e2e",
            slow="1.5s", artifact_key="pcd-e2e-health",
        )
        print("RESULT " + json.dumps(result))
        """
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=_prefect_env(fleet, tmp_path),
    )
    progress(f"the flow ran in {time.monotonic() - started:.1f}s")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.split("RESULT ", 1)[1])
    assert summary["healthy"] is False and summary["notified"] is True
    assert [b["rule"] for b in summary["breaches"]] == ["orphans"]

    (artifact,) = _artifacts(fleet.api_url, "pcd-e2e-health")
    assert artifact["type"] == "markdown"
    assert artifact["id"] == summary["artifact_id"]
    assert artifact["data"].startswith("# Cancellation health — last 1h")
    assert "| deployment | cancels |" in artifact["data"] and "## Suspected orphans" in artifact["data"]
    run = Api(fleet.api_url).call("GET", f"flow_runs/{artifact['flow_run_id']}")
    assert run["state"]["type"] == "COMPLETED"

    (posted,) = [json.loads(body) for body in received]
    assert "1 rule(s) breached" in posted["subject"]
    assert "orphans:" in posted["text"] and "ended by the server's cancelling timeout" in posted["text"]


def test_schedule_serves_the_flow_on_a_cron(fleet: SeededFleet, tmp_path: Path) -> None:
    env = _prefect_env(fleet, tmp_path)
    env["PREFECT_RUNNER_POLL_FREQUENCY"] = "2"
    command = [*CLI, "schedule", "--cron", "0 3 * * *", "--timezone", "Europe/Paris", "--name", "e2e",
               "--since", "1h", "--fail-on", "orphans", "--no-sample"]  # fmt: skip
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    api = Api(fleet.api_url)  # retries what a busy SQLite server refuses now and then
    try:
        deployment: dict[str, Any] = {}

        def registered() -> bool:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            response = api.http.get("deployments/name/cancellation-health-report/e2e")
            if response.status_code == 200:
                deployment.update(response.json())
            return bool(deployment)

        wait_until(registered, 120, "the served deployment")
        (schedule,) = deployment["schedules"]
        assert schedule["schedule"]["cron"] == "0 3 * * *"
        assert schedule["schedule"]["timezone"] == "Europe/Paris"
        assert deployment["parameters"]["fail_on"] == ["orphans"]
        # Served by module path, so an installed package needs no source files on the side.
        assert deployment["entrypoint"] == "prefect_cancel_doctor.flows.cancellation_health_report"

        run = api.call("POST", f"deployments/{deployment['id']}/create_flow_run", {})

        def finished() -> bool:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            state = api.call("GET", f"flow_runs/{run['id']}")["state"]["type"]
            assert state not in ("FAILED", "CRASHED", "CANCELLED"), (tmp_path / "serve.log").read_text()[
                -3000:
            ]
            return bool(state == "COMPLETED")

        took = wait_until(finished, 240, "the served run to complete", interval=1.0)
        progress(f"the served run completed in {took:.1f}s")
        mine = [a for a in _artifacts(fleet.api_url, "cancellation-health") if a["flow_run_id"] == run["id"]]
        assert len(mine) == 1 and mine[0]["data"].startswith("# Cancellation health")
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGINT)
            try:
                serve.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(serve.pid, signal.SIGKILL)
                serve.wait(10)
        log.close()
        api.close()
    # Stopping the server pauses the schedule (pause_on_shutdown).
    paused = Api(fleet.api_url).call("GET", f"deployments/{deployment['id']}")
    assert paused["paused"] is True


PREFECT_YAML = """\
name: cancel-doctor
prefect-version: 3.9.1
pull: []
deployments:
  - name: fleet
    entrypoint: prefect_cancel_doctor.flows:cancellation_health_report
    work_pool:
      name: ops
    schedules:
      - cron: "*/15 * * * *"
        timezone: UTC
    parameters:
      since: 1h
      fail_on: ["stuck-older-than=15m", "p95-above=2m", "orphans"]
"""


def test_the_readme_prefect_deploy_recipe_runs_on_a_process_worker(
    fleet: SeededFleet, tmp_path: Path
) -> None:
    """`prefect deploy` with the README's prefect.yaml, then one run on a real process worker."""
    from prefect_cancel_doctor.demo.harness import prefect_command

    env = _prefect_env(fleet, tmp_path)
    Api(fleet.api_url).pool("ops")
    project = tmp_path / "project"
    project.mkdir()
    (project / "prefect.yaml").write_text(PREFECT_YAML)
    deploy = subprocess.run(
        [*prefect_command(), "--no-prompt", "deploy", "--all"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deploy.returncode == 0, deploy.stdout[-2000:] + deploy.stderr[-2000:]
    api = Api(fleet.api_url)  # retries what a busy SQLite server refuses now and then
    deployment = api.call("GET", "deployments/name/cancellation-health-report/fleet")
    assert deployment["work_pool_name"] == "ops"
    assert deployment["schedules"][0]["schedule"]["cron"] == "*/15 * * * *"
    run = api.call("POST", f"deployments/{deployment['id']}/create_flow_run", {})
    worker = subprocess.run(
        [*prefect_command(), "worker", "start", "--pool", "ops", "--type", "process", "--run-once"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-2000:]
    state = api.call("GET", f"flow_runs/{run['id']}")["state"]
    # orphans is breached on this fleet, but the run only fails with fail_run_on_breach.
    assert state["type"] == "COMPLETED", worker.stdout[-3000:]
    mine = [a for a in _artifacts(fleet.api_url, "cancellation-health") if a["flow_run_id"] == run["id"]]
    assert len(mine) == 1 and "rule(s) breached" in mine[0]["description"]
    api.close()
