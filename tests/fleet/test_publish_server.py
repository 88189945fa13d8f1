"""`scan --publish` on a real Prefect server, with runs really stuck.

GIVEN a local server (SQLite) with two runs stuck in Cancelling — `sleep` (its worker
killed: `cancel_not_observed`, its process still here) and `gone` (its process killed:
`infrastructure_gone`) — a live standby worker of their pool on this host, and two
Automations created through the API:

- A: on `prefect-cancel-doctor.verdict` whose cause label is `infrastructure_gone`,
  change the run's state to Cancelled (the run inferred from the event's related
  `flow-run`), the fix the verdict gives;
- B: on two `cancel_not_observed` verdicts of the same run (`for_each` the related
  flow run, threshold 2), pause the run's deployment (inferred from the related
  `deployment`);

WHEN `prefect-cancel-doctor scan --publish` runs (then once more),
THEN the events API, filtered by the related flow run, returns one verdict event per
scan for each run, from this host, naming the run's flow, deployment, work pool and
worker by the ids the API gives them; each run carries one Markdown artifact with
the verdict, the blocking line and the fix (replaced, not added to, by the second
scan); Automation A marks `gone` Cancelled with its message, and B pauses `sleep`'s
deployment only after the second verdict.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.helpers import clean_environ, run_cli

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.environment import DemoEnvironment

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc"),
]

HOST = "pcd-publish-test-host"
GONE_MESSAGE = "marked Cancelled by an Automation: prefect-cancel-doctor says infrastructure_gone"


def _progress(message: str) -> None:
    sys.__stderr__.write(f"[publish {time.strftime('%H:%M:%S')}] {message}\n")


@pytest.fixture(scope="module")
def staged() -> Iterator[DemoEnvironment]:
    pytest.importorskip("prefect")
    from prefect_cancel_doctor.demo.environment import MAIN_POOL, run_demo_environment

    with run_demo_environment(["sleep", "gone"], _progress) as environment:
        # A live worker of the pool on this host: the host answers for the pool's runs.
        environment.harness.start_worker(MAIN_POOL, "pcd-standby")
        yield environment


def _call(api: str, method: str, path: str, body: object = None) -> Any:
    response = httpx.request(method, f"{api}/{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json() if response.content else None


def _verdicts(api: str, run_id: str) -> list[dict[str, Any]]:
    page = _call(
        api,
        "POST",
        "events/filter",
        {
            "filter": {
                "event": {"name": ["prefect-cancel-doctor.verdict"]},
                "related": {"id": [f"prefect.flow-run.{run_id}"]},
                "order": "ASC",
            }
        },
    )
    return list(page["events"])


def _wait(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _publish(staged: DemoEnvironment, tmp_path: Path) -> dict[str, Any]:
    env = clean_environ(PREFECT_API_URL=staged.api_url, PREFECT_HOME=str(tmp_path), PCD_HOST=HOST)
    done = run_cli("scan", "--publish", "--format", "json", "--samples", "2", env=env)
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"published 2 verdict event(s), 2 artifact(s) as host {HOST}" in done.stderr, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    assert document["errors"] == []
    return document


@pytest.fixture(scope="module")
def automations(staged: DemoEnvironment) -> dict[str, str]:
    api = staged.api_url
    base = {"type": "event", "expect": ["prefect-cancel-doctor.verdict"], "posture": "Reactive"}
    gone = _call(
        api,
        "POST",
        "automations/",
        {
            "name": "cancel-doctor: infrastructure gone -> Cancelled",
            "trigger": {
                **base,
                "match": {"prefect-cancel-doctor.cause": "infrastructure_gone"},
                "threshold": 1,
            },
            "actions": [
                {
                    "type": "change-flow-run-state",
                    "state": "CANCELLED",
                    "message": GONE_MESSAGE,
                    "force": True,
                }
            ],
        },
    )
    twice = _call(
        api,
        "POST",
        "automations/",
        {
            "name": "cancel-doctor: cancel_not_observed twice -> pause the deployment",
            "trigger": {
                **base,
                "match": {"prefect-cancel-doctor.cause": "cancel_not_observed"},
                "for_each": ["related:flow-run:prefect.resource.id"],
                "threshold": 2,
                "within": 3600,
            },
            "actions": [{"type": "pause-deployment", "source": "inferred"}],
        },
    )
    return {"gone": gone["id"], "twice": twice["id"]}


def test_verdicts_become_events_artifacts_and_automations_act_on_them(
    staged: DemoEnvironment, automations: dict[str, str], tmp_path: Path
) -> None:
    api = staged.api_url
    sleep, gone = staged.run("sleep"), staged.run("gone")
    causes = {r["flow_run"]["id"]: r["verdict"]["cause"] for r in _publish(staged, tmp_path)["runs"]}
    assert causes == {sleep.run_id: "cancel_not_observed", gone.run_id: "infrastructure_gone"}

    # The events, read back by the run they relate to.
    run = _call(api, "GET", f"flow_runs/{sleep.run_id}")
    pool = _call(api, "GET", f"work_pools/{sleep.pool_name}")
    (event,) = _wait("the sleep run's verdict event", lambda: _verdicts(api, sleep.run_id))
    assert event["resource"]["prefect.resource.id"] == f"prefect-cancel-doctor.host.{HOST}"
    assert event["resource"]["prefect-cancel-doctor.cause"] == "cancel_not_observed"
    related = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in event["related"]}
    assert related == {
        "flow-run": f"prefect.flow-run.{sleep.run_id}",
        "flow": f"prefect.flow.{run['flow_id']}",
        "deployment": f"prefect.deployment.{run['deployment_id']}",
        "work-pool": f"prefect.work-pool.{pool['id']}",
        "worker": f"prefect.worker.process.{sleep.worker_name}",
    }
    payload = event["payload"]
    assert payload["host"] == HOST and payload["found_here"] is True
    assert payload["blocking_call"]["function"] == "time.sleep"
    assert payload["blocking_call"]["line"] == sleep.line
    assert payload["confidence"] >= 0.9 and payload["doctor_version"]
    assert any(f":{sleep.line})" in frame for frame in payload["stack"])
    (gone_event,) = _wait("the gone run's verdict event", lambda: _verdicts(api, gone.run_id))
    assert gone_event["payload"]["cause"] == "infrastructure_gone"
    assert gone_event["payload"]["found_here"] is False  # answered for as its pool's host

    # The artifact, read back from the run.
    (artifact,) = _call(
        api, "POST", "artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [sleep.run_id]}}}
    )
    assert artifact["key"] == f"cancel-doctor-{sleep.run_id[:13]}" and artifact["type"] == "markdown"
    assert "`cancel_not_observed`" in artifact["data"] and f"stuck_sleep.py:{sleep.line}" in artifact["data"]
    assert "**End it now**" in artifact["data"] and "**Fix**" in artifact["data"]

    # Automation A: the infrastructure_gone run marked Cancelled, with its message.
    def cancelled() -> dict[str, Any] | None:
        state = _call(api, "GET", f"flow_runs/{gone.run_id}")["state"]
        return state if state["type"] == "CANCELLED" else None

    state = _wait("Automation A to mark the gone run Cancelled", cancelled)
    assert state["message"] == GONE_MESSAGE
    assert _call(api, "GET", f"flow_runs/{sleep.run_id}")["state"]["type"] == "CANCELLING"
    # Automation B: not after one cancel_not_observed verdict ...
    assert _call(api, "GET", f"deployments/{sleep.deployment_id}")["paused"] is False

    # ... but after the second verdict of the same run.
    _publish_again(staged, tmp_path)
    _wait(
        "Automation B to pause the sleep run's deployment",
        lambda: _call(api, "GET", f"deployments/{sleep.deployment_id}")["paused"],
    )
    _wait("the sleep run's second verdict event", lambda: len(_verdicts(api, sleep.run_id)) == 2)
    artifacts = _call(
        api, "POST", "artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [sleep.run_id]}}}
    )
    assert [a["id"] for a in artifacts] == [artifact["id"]]  # replaced in place, not added to
    assert artifacts[0]["updated"] > artifact["updated"]


def _publish_again(staged: DemoEnvironment, tmp_path: Path) -> None:
    env = clean_environ(PREFECT_API_URL=staged.api_url, PREFECT_HOME=str(tmp_path), PCD_HOST=HOST)
    done = run_cli("scan", "--publish", "--format", "json", "--samples", "2", env=env)
    assert done.returncode == 1, done.stderr[-2000:]
    # The gone run is Cancelled now (by Automation A) and nothing of it runs: only sleep is left.
    assert f"published 1 verdict event(s), 1 artifact(s) as host {HOST}" in done.stderr, done.stderr


def test_an_agent_started_before_its_server_answers_registers_once_it_does(
    staged: DemoEnvironment, tmp_path: Path
) -> None:
    """An agent whose API is unreachable at start (a server restarting, a SQLite server
    answering 500 under load) keeps trying instead of exiting, and serves once it answers."""
    import os
    import signal
    import subprocess
    from urllib.parse import urlsplit

    from tests.helpers import CLI, TcpForwarder, closed_port

    port, host = closed_port(), "pcd-late-agent"
    env = clean_environ(
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api", PREFECT_HOME=str(tmp_path), PCD_HOST=host
    )
    log = tmp_path / "agent.log"
    # Once a year: no scheduled scan (and no verdict event) while the test runs.
    argv = [*CLI, "agent", "--cron", "0 0 1 1 *"]
    with log.open("wb") as out:
        agent = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    forwarder = None
    try:

        def trying_again() -> bool:
            assert agent.poll() is None, log.read_text()  # exiting leaves the host uncovered
            return "trying again in" in log.read_text()

        _wait("the agent to say it will try again", trying_again, 60)
        upstream = urlsplit(staged.api_url)
        forwarder = TcpForwarder(port, (upstream.hostname or "127.0.0.1", upstream.port or 80))

        def registered() -> bool:
            assert agent.poll() is None, log.read_text()
            name = f"prefect-cancel-doctor-agent/{host}"
            return httpx.get(f"{staged.api_url}/deployments/name/{name}", timeout=10).status_code == 200

        _wait("the agent's deployment once the server answers", registered, 120)
    finally:
        os.killpg(agent.pid, signal.SIGINT)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(agent.pid, signal.SIGKILL)
        if forwarder is not None:
            forwarder.close()
