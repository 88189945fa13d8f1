"""The autopilot on a real Prefect server, acting on real processes, its events read back.

GIVEN a local server (SQLite) of this module's own — its cycles end runs and publish host
events, which would change what the session's staged runs show to the tests sharing them —
and four runs of two process work pools on this host, their workers then killed:

- `orphan`: a flow writing a row to a SQLite file every 50 ms, cancelled and then marked
  Cancelled as the server's cancellation timeout does, while its process writes on
  (`orphaned_infrastructure`), in pool `autopilot`;
- `baseline`: the same flow in pool `autopilot-off`, outside the policy's pools: the orphan
  left to people, the figure to compare with;
- `child`: cancelled while its worker lived; the run ended Cancelled, the child it started in
  its own session runs on (`child_process_survives`), in pool `autopilot`;
- `stuck`: a sleeping flow cancelled after its worker died (`cancel_not_observed`, a cause the
  policy leaves to people), in pool `autopilot`;

and a policy of the safe causes without the wait (stuck_for 0s, grace 5s, pool `autopilot`),
WHEN `agent --autopilot` runs — once as a dry run, once with the kill switch set, once served
as Prefect deployment whose run is triggered through the API —
THEN the dry run and the kill switch act on nothing and publish what they would have done and
why not; the served cycle ends the orphan and the surviving child, and publishes one event per
run (`resolved` with the plan, what was signalled and how the run ended; `resolve-refused`
with why), read back from the server; rows written after Cancelled stop for the orphan, not for
the baseline. A PID reused between plan and action is refused with nothing signalled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.helpers import CLI, clean_environ, run_cli

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.harness import LocalPrefect

pytestmark = [
    pytest.mark.server,
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs Linux /proc"),
]

HOST = "pcd-autopilot-host"
POOL, OFF_POOL = "autopilot", "autopilot-off"
FLOWS = Path(__file__).parent / "autopilot_flows"
POLICY = """\
name = "pilot"
causes = ["orphaned_infrastructure", "child_process_survives", "infrastructure_gone", "never_started"]
min_confidence = 0.9
stuck_for = "0s"
grace = "5s"
max_runs_per_cycle = 5
max_actions_per_hour = 20
work_pools = ["autopilot"]
"""


def _progress(message: str) -> None:
    sys.__stderr__.write(f"[autopilot {time.strftime('%H:%M:%S')}] {message}\n")


@dataclass
class Staged:
    prefect: LocalPrefect
    #: Scenario -> run id.
    runs: dict[str, str]
    #: The writers' databases, and when their runs were marked Cancelled (epoch seconds).
    databases: dict[str, Path]
    cancelled_at: dict[str, float]
    #: The child that outlived the `child` run.
    survivor: int
    policy: Path

    def env(self, tmp_path: Path, **extra: str) -> dict[str, str]:
        return clean_environ(
            PREFECT_API_URL=self.prefect.api_url,
            PREFECT_HOME=str(tmp_path / "home"),
            XDG_STATE_HOME=str(tmp_path / "state"),
            PCD_HOST=HOST,
            **extra,
        )

    def alive(self, scenario: str) -> bool:
        if scenario == "child":
            return _running(self.survivor)
        return bool(self.prefect.run_processes(self.runs[scenario]))

    def state(self, scenario: str) -> str | None:
        return self.prefect.state_type(self.runs[scenario])


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Staged]:
    pytest.importorskip("prefect")
    from prefect_cancel_doctor.demo.catalog import SCENARIO_DIR
    from prefect_cancel_doctor.demo.harness import CANCELLING_TIMEOUT_MESSAGE, LocalPrefect

    started = time.monotonic()
    with LocalPrefect(log=_progress) as prefect:
        flows, ready = prefect.workdir / "flows", prefect.workdir / "ready"
        flows.mkdir()
        ready.mkdir()
        (flows / "writer.py").write_text((FLOWS / "writer.py").read_text())
        for program in ("stuck_child.py", "stuck_sleep.py"):
            (flows / program).write_text((SCENARIO_DIR / program).read_text())
        for pool in (POOL, OFF_POOL):
            prefect.create_process_pool(pool)
        deployments = {
            "orphan": ("autopilot-writer", "writer.py:writer_flow", POOL),
            "baseline": ("autopilot-writer", "writer.py:writer_flow", OFF_POOL),
            "child": ("stuck-child", "stuck_child.py:child_flow", POOL),
            "stuck": ("stuck-sleep", "stuck_sleep.py:sleep_flow", POOL),
        }
        runs, databases = {}, {}
        for scenario, (flow_name, entrypoint, pool) in deployments.items():
            deployment = prefect.deploy(
                flow_name=flow_name, entrypoint=entrypoint, directory=flows, pool=pool, name=scenario
            )
            parameters: dict[str, Any] = {"ready_path": str(ready / scenario)}
            if flow_name == "autopilot-writer":
                databases[scenario] = prefect.workdir / f"{scenario}.sqlite"
                parameters["database"] = str(databases[scenario])
            runs[scenario] = prefect.create_run(deployment, parameters)
        workers = [
            prefect.start_worker(POOL, "autopilot-w1"),
            prefect.start_worker(OFF_POOL, "autopilot-off-w1"),
        ]
        prefect.wait_until(
            lambda: all((ready / scenario).exists() for scenario in runs), 240, "every run to start"
        )
        # `child`: cancelled while its worker lives: the flow ends, its child in its own session does not.
        survivor = int((ready / "child").with_suffix(".child").read_text())
        prefect.cancel_run(runs["child"])
        prefect.wait_for_state(runs["child"], ["CANCELLED"], 120)
        prefect.wait_until(
            lambda: prefect.run_processes(runs["child"]) == [survivor],
            60,
            "the child run's flow process to end",
        )
        for worker in workers:
            prefect.kill_worker(worker)  # the workers die: nothing acts on the next cancels
        cancelled_at = {}
        for scenario in ("orphan", "baseline", "stuck"):
            prefect.cancel_run(runs[scenario])
            prefect.wait_for_state(runs[scenario], ["CANCELLING"], 30)
        for scenario in ("orphan", "baseline"):
            # As the server's cancellation timeout does (Prefect 3.7.5+): Cancelled, the process left.
            prefect.force_state(runs[scenario], "CANCELLED", CANCELLING_TIMEOUT_MESSAGE)
            state = prefect.read_run(runs[scenario]).state
            assert state is not None and state.timestamp is not None
            cancelled_at[scenario] = state.timestamp.timestamp()
        policy = tmp_path_factory.mktemp("policy") / "pilot.toml"
        policy.write_text(POLICY)
        staged = Staged(prefect, runs, databases, cancelled_at, survivor, policy)
        assert all(staged.alive(s) for s in runs), "every run's process should still run"
        _progress(
            f"staged in {time.monotonic() - started:.0f} s: an orphan writing rows, its baseline, a child, "
            "a stuck run"
        )
        yield staged
        with contextlib.suppress(OSError):
            os.kill(survivor, signal.SIGKILL)


def _call(staged: Staged, method: str, path: str, body: object = None) -> Any:
    """One API request; again, a few times, on 503 (a loaded SQLite server: "database is locked")."""
    for attempt in range(6):
        response = httpx.request(method, f"{staged.prefect.api_url}/{path}", json=body, timeout=30)
        if response.status_code != 503 or attempt == 5:
            break
        time.sleep(0.5 * (attempt + 1))
    response.raise_for_status()
    return response.json() if response.content else None


def _autopilot_events(staged: Staged, since: datetime, expected: int) -> dict[str, dict[str, Any]]:
    """The autopilot's events since `since`, by run id (one per run per cycle), once `expected` are in."""
    names = [f"prefect-cancel-doctor.{name}" for name in ("resolved", "resolve-planned", "resolve-refused")]
    body = {
        "filter": {
            "occurred": {
                "since": since.isoformat(),
                "until": datetime.now(timezone.utc).replace(year=2100).isoformat(),
            },
            "event": {"name": names},
            "related": {"id": [f"prefect.flow-run.{run_id}" for run_id in staged.runs.values()]},
            "order": "ASC",
        },
        "limit": 50,
    }
    deadline = time.monotonic() + 60
    while True:
        events = _call(staged, "POST", "events/filter", body)["events"]
        if len(events) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    by_run = {}
    for event in events:
        (run,) = [r for r in event["related"] if r["prefect.resource.role"] == "flow-run"]
        by_run[run["prefect.resource.id"].removeprefix("prefect.flow-run.")] = event
    assert len(events) == expected, [e["event"] for e in events]
    return {scenario: by_run[run_id] for scenario, run_id in staged.runs.items() if run_id in by_run}


def _rows_after(database: Path, since: float) -> int:
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as db:
        (count,) = db.execute("SELECT count(*) FROM rows WHERE at > ?", (since,)).fetchone()
    return int(count)


def _last_row(database: Path) -> float:
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as db:
        (last,) = db.execute("SELECT max(at) FROM rows").fetchone()
    return float(last)


def _before(staged: Staged) -> dict[str, tuple[bool, str | None]]:
    return {s: (staged.alive(s), staged.state(s)) for s in staged.runs}


def test_a_dry_run_acts_on_nothing_and_publishes_what_it_would_have_done(
    staged: Staged, tmp_path: Path
) -> None:
    before, since = _before(staged), datetime.now(timezone.utc)
    done = run_cli(
        "agent",
        "--once",
        "--autopilot",
        str(staged.policy),
        "--autopilot-dry-run",
        "--samples",
        "1",
        env=staged.env(tmp_path),
    )
    assert done.returncode == 1, done.stderr[-3000:]
    summary = (
        "autopilot (autopilot-dry-run, policy pilot): 0 run(s) resolved, 2 planned (dry run), "
        "2 left to people"
    )
    assert summary in done.stderr, done.stderr[-3000:]
    assert _before(staged) == before  # every process still runs, every state as it was
    assert not (tmp_path / "state" / "prefect-cancel-doctor" / "actions.jsonl").exists()

    events = _autopilot_events(staged, since, 4)
    kinds = {s: (e["event"], e["resource"].get("prefect-cancel-doctor.refusal")) for s, e in events.items()}
    assert kinds == {
        "orphan": ("prefect-cancel-doctor.resolve-planned", None),
        "child": ("prefect-cancel-doctor.resolve-planned", None),
        "baseline": ("prefect-cancel-doctor.resolve-refused", "outside_pools"),
        "stuck": ("prefect-cancel-doctor.resolve-refused", "cause"),
    }
    planned = events["orphan"]
    assert planned["resource"]["prefect.resource.id"] == f"prefect-cancel-doctor.host.{HOST}"
    assert planned["resource"]["prefect-cancel-doctor.mode"] == "autopilot-dry-run"
    assert planned["resource"]["prefect-cancel-doctor.cause"] == "orphaned_infrastructure"
    payload = planned["payload"]
    pids = staged.prefect.run_processes(staged.runs["orphan"])
    assert payload["plan"][0].startswith("plan for run ") and "orphaned_infrastructure" in payload["plan"][0]
    assert (
        payload["plan"][1]
        == f"  1. SIGTERM {' '.join(map(str, pids))}; wait up to 5 s; SIGKILL whatever still runs"
    )
    assert payload["signalled"] == [] and payload["ended"] is None and payload["dry_run"] is True
    assert payload["policy"]["name"] == "pilot" and payload["policy"]["work_pools"] == [POOL]
    refused = events["stuck"]["payload"]
    assert refused["why"] == "cancel_not_observed is not among the causes policy pilot acts on"


def test_the_kill_switch_stops_the_autopilot_fleet_wide(staged: Staged, tmp_path: Path) -> None:
    _call(staged, "POST", "variables/", {"name": "prefect-cancel-doctor-autopilot", "value": "off"})
    try:
        before, since = _before(staged), datetime.now(timezone.utc)
        done = run_cli(
            "agent", "--once", "--autopilot", str(staged.policy), "--samples", "1", env=staged.env(tmp_path)
        )
        assert done.returncode == 1, done.stderr[-3000:]
        assert (
            "switched off: the kill switch is on: Prefect variable prefect-cancel-doctor-autopilot = 'off'"
            in done.stderr
        )
        assert _before(staged) == before
        events = _autopilot_events(staged, since, 4)
        assert {e["resource"].get("prefect-cancel-doctor.refusal") for e in events.values()} == {
            "kill_switch"
        }
        assert {e["event"] for e in events.values()} == {"prefect-cancel-doctor.resolve-refused"}
        assert not (tmp_path / "state" / "prefect-cancel-doctor" / "actions.jsonl").exists()
    finally:
        _call(staged, "DELETE", "variables/name/prefect-cancel-doctor-autopilot")


def test_a_pid_reused_between_plan_and_action_is_refused_and_nothing_is_signalled(
    staged: Staged, tmp_path: Path
) -> None:
    from prefect_cancel_doctor.act.autopilot import Ledger, Refusal
    from prefect_cancel_doctor.act.policy import parse_policy
    from prefect_cancel_doctor.act.resolve import ActionLog
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi
    from prefect_cancel_doctor.clients.settings import Connection
    from prefect_cancel_doctor.fleet.autopilot import Autopilot, autopilot_cycle
    from prefect_cancel_doctor.fleet.publish import publish, seen_here
    from prefect_cancel_doctor.model import Report
    from prefect_cancel_doctor.scan.engine import Options, diagnose_run

    policy = parse_policy(
        {"name": "stuck", "causes": ["cancel_not_observed"], "stuck_for": "0s", "grace": "1s"}
    )
    with PrefectApi(Connection(staged.prefect.api_url)) as api:
        (d,) = diagnose_run(api, staged.runs["stuck"], Options(samples=1)).runs
        assert d.verdict.cause.value == "cancel_not_observed" and d.target is not None
        # The plan saw another process under the same PID (another start time): the PID was reused.
        reused = tuple(
            dataclasses.replace(
                s, proc=dataclasses.replace(s.proc, start_time_ticks=s.proc.start_time_ticks - 100)
            )
            if s.proc is not None
            else s
            for s in d.target.processes
        )
        d = dataclasses.replace(d, target=dataclasses.replace(d.target, processes=reused))
        before, since = _before(staged), datetime.now(timezone.utc)
        log = ActionLog(tmp_path / "actions.jsonl")
        seen = seen_here(HOST)
        round_ = autopilot_cycle(
            api, [d], seen, Autopilot(policy), log=log, ledger=Ledger(tmp_path / "autopilot.jsonl")
        )
        # Published as a cycle publishes it, with the verdict.
        report = Report(staged.prefect.api_url, since.isoformat(), (d,))
        outcome = publish(
            api, report, seen=seen, artifacts=False, extra_events=lambda ids: round_.events(HOST, ids)
        )
        assert outcome.errors == [] and outcome.other_events == 1
    ((action),) = round_.actions
    assert action.decision.reason is Refusal.PID_REUSED, action.decision
    assert "changed since the plan (PID reused): nothing was signalled" in action.decision.why
    assert _before(staged) == before
    assert '"refused: PID reused since the plan"' in log.path.read_text()
    assert not (
        tmp_path / "autopilot.jsonl"
    ).exists()  # a refusal is not an action: the hour's count is unchanged


class _Webhook:
    """A local HTTP endpoint a notification block posts to: what the on-call would receive."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = list[dict[str, Any]]()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append(json.loads(self.rfile.read(length) or b"null"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _readme_automation(block_id: str) -> dict[str, Any]:
    """The README's Automation that notifies on the autopilot's events, as written, with a block's id."""
    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Autopilot\n", 1)[1].split("\n## ", 1)[0]
    recipe = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    document: dict[str, Any] = yaml.safe_load(recipe.replace("<your notification block's id>", block_id))
    return document


@contextlib.contextmanager
def _notified(staged: Staged) -> Iterator[_Webhook]:
    """The README's Automation, with a webhook notification block posting to a local endpoint."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.settings import PREFECT_API_URL, temporary_settings

    webhook = _Webhook()
    try:
        block = CustomWebhookNotificationBlock(
            name="on-call", url=webhook.url, json_data={"subject": "{{subject}}", "body": "{{body}}"}
        )
        with temporary_settings(updates={PREFECT_API_URL: staged.prefect.api_url}):
            block_id = str(block.save("pcd-autopilot-on-call", overwrite=True))
        automation = _call(staged, "POST", "automations/", _readme_automation(block_id))
        try:
            yield webhook
        finally:
            _call(staged, "DELETE", f"automations/{automation['id']}")
    finally:
        webhook.close()


@dataclass
class Agent:
    """`agent --autopilot` served on this host: its deployment, its log, its state directory."""

    deployment_id: str
    log: Path
    state: Path

    def cycle(self, staged: Staged, parameters: dict[str, Any] | None = None) -> tuple[str, str]:
        """Run its deployment now, through the API as the UI's Run does: (the run's id, its final state)."""
        run_id = staged.prefect.create_run(self.deployment_id, parameters or {})
        state = staged.prefect.wait_for_state(run_id, ["COMPLETED", "FAILED", "CRASHED"], 180)
        return run_id, state


@pytest.fixture(scope="module")
def agent(staged: Staged, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    home = tmp_path_factory.mktemp("agent")
    log = home / "agent.log"
    # Once a year: the only cycles are the runs the tests start.
    argv = [*CLI, "agent", "--cron", "0 0 1 1 *", "--autopilot", str(staged.policy), "--samples", "1"]
    with log.open("wb") as out:
        # Its Runner looks for runs to start every second (10 s by default): the tests start them.
        env = staged.env(home, PREFECT_RUNNER_POLL_FREQUENCY="1")
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    prefect = staged.prefect
    try:

        def deployment() -> str | None:
            assert process.poll() is None, log.read_text()
            answer = httpx.get(
                f"{prefect.api_url}/deployments/name/prefect-cancel-doctor-agent/{HOST}", timeout=10
            )
            return str(answer.json()["id"]) if answer.status_code == 200 else None

        prefect.wait_until(deployment, 120, "the agent's deployment")
        deployment_id = deployment()
        assert deployment_id is not None
        assert "autopilot on, policy pilot:" in log.read_text()
        yield Agent(deployment_id, log, home / "state")
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_one_served_cycle_ends_the_orphan_and_the_surviving_child(staged: Staged, agent: Agent) -> None:
    with _notified(staged) as webhook:
        _one_served_cycle(staged, agent, webhook)


def _one_served_cycle(staged: Staged, agent: Agent, webhook: _Webhook) -> None:
    since = datetime.now(timezone.utc)
    triggered, triggered_at = time.monotonic(), time.time()
    cycle, state = agent.cycle(staged)
    assert state == "COMPLETED", agent.log.read_text()[-4000:]
    took = time.monotonic() - triggered

    # The orphan and the child are gone; the baseline (outside the policy's pools) and the run whose
    # cause the policy leaves to people still run; no state was changed (both were already final).
    assert {s: staged.alive(s) for s in staged.runs} == {
        "orphan": False,
        "child": False,
        "baseline": True,
        "stuck": True,
    }
    assert {s: staged.state(s) for s in staged.runs} == {
        "orphan": "CANCELLED",
        "child": "CANCELLED",
        "baseline": "CANCELLED",
        "stuck": "CANCELLING",
    }

    # Rows written after the run was marked Cancelled, and after the cycle was triggered: the
    # orphan's stopped within the cycle, the baseline's go on.
    orphan, baseline = staged.databases["orphan"], staged.databases["baseline"]
    rows = {
        name: _rows_after(db, staged.cancelled_at[name])
        for name, db in (("orphan", orphan), ("baseline", baseline))
    }
    since_trigger = {
        name: _rows_after(db, triggered_at) for name, db in (("orphan", orphan), ("baseline", baseline))
    }
    time.sleep(1.0)
    assert _rows_after(orphan, staged.cancelled_at["orphan"]) == rows["orphan"]
    assert _rows_after(baseline, staged.cancelled_at["baseline"]) > rows["baseline"]
    last = _last_row(orphan)
    started = _call(staged, "GET", f"flow_runs/{cycle}")["start_time"]
    cycle_start = datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
    assert since_trigger["orphan"] < since_trigger["baseline"]
    _progress(
        f"rows written after Cancelled: orphan {rows['orphan']} (then none), baseline {rows['baseline']} and "
        f"counting; after the cycle was triggered: orphan {since_trigger['orphan']}, baseline "
        f"{since_trigger['baseline']}; the orphan's last row {last - cycle_start:.1f} s after the cycle's run"
        f" started ({last - triggered_at:.1f} s after it was triggered; the cycle took {took:.1f} s)"
    )

    events = _autopilot_events(staged, since, 4)
    kinds = {s: (e["event"], e["resource"].get("prefect-cancel-doctor.outcome")) for s, e in events.items()}
    assert kinds == {
        "orphan": ("prefect-cancel-doctor.resolved", "resolved"),
        "child": ("prefect-cancel-doctor.resolved", "resolved"),
        "baseline": ("prefect-cancel-doctor.resolve-refused", None),
        "stuck": ("prefect-cancel-doctor.resolve-refused", None),
    }
    resolved = events["orphan"]
    run = _call(staged, "GET", f"flow_runs/{staged.runs['orphan']}")
    pool = _call(staged, "GET", f"work_pools/{POOL}")
    related = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in resolved["related"]}
    assert related == {
        "flow-run": f"prefect.flow-run.{run['id']}",
        "flow": f"prefect.flow.{run['flow_id']}",
        "deployment": f"prefect.deployment.{run['deployment_id']}",
        "work-pool": f"prefect.work-pool.{pool['id']}",
        "worker": "prefect.worker.process.autopilot-w1",
    }
    assert resolved["resource"]["prefect.resource.id"] == f"prefect-cancel-doctor.host.{HOST}"
    assert resolved["resource"]["prefect-cancel-doctor.mode"] == "autopilot"
    assert resolved["resource"]["prefect-cancel-doctor.policy"] == "pilot"
    payload = resolved["payload"]
    assert payload["decision"] == "resolved" and payload["dry_run"] is False
    assert payload["plan"][1].startswith("  1. SIGTERM ")
    assert payload["signalled"] and all(line.startswith("SIGTERM → ") for line in payload["signalled"])
    assert payload["signalled"][0].endswith(": sent")
    assert payload["ended"] == {"resolved": True, "state_type": "CANCELLED", "state_set": None}
    assert payload["policy"]["causes"] == sorted(
        ["orphaned_infrastructure", "child_process_survives", "infrastructure_gone", "never_started"]
    )
    child = events["child"]["payload"]
    assert child["cause"] == "child_process_survives" and any(
        str(staged.survivor) in s for s in child["signalled"]
    )

    # The line in the run's artifact, under its verdict.
    (artifact,) = _call(
        staged, "POST", "artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [staged.runs["orphan"]]}}}
    )
    assert "## Autopilot" in artifact["data"] and "autopilot, policy pilot: run " in artifact["data"]
    assert "resolved: SIGTERM" in artifact["data"]
    # A run left to people says how to resolve it from the UI, with this host's agent.
    (stuck,) = _call(
        staged, "POST", "artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [staged.runs["stuck"]]}}}
    )
    assert (
        f"run the deployment `prefect-cancel-doctor-agent/{HOST}` (*Run*, *Custom run*) with the parameter "
        f"`resolve` = `{staged.runs['stuck']}`"
    ) in stuck["data"]
    actions = (agent.state / "prefect-cancel-doctor" / "actions.jsonl").read_text()
    assert actions.count('"signal": "SIGTERM"') >= 2 and '"refused' not in actions

    # The README's Automation told the on-call of each run the autopilot ended, and of nothing else.
    deadline = time.monotonic() + 60
    while len(webhook.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    names = {s: _call(staged, "GET", f"flow_runs/{run_id}")["name"] for s, run_id in staged.runs.items()}
    subjects = sorted(message["subject"] for message in webhook.received)
    assert subjects == sorted(
        f"prefect-cancel-doctor ended {names[s]} on {HOST}" for s in ("orphan", "child")
    )
    (told,) = [m["body"] for m in webhook.received if names["orphan"] in m["subject"]]
    _progress(f"notified: {told}")
    assert told.startswith(f"{names['orphan']} (orphaned_infrastructure, policy pilot): SIGTERM → ")
    ui = staged.prefect.api_url.removesuffix("/api")
    assert told.endswith(f"the run is CANCELLED. {ui}/runs/flow-run/{staged.runs['orphan']}"), told


def test_the_hourly_limit_holds_when_the_hosts_ledger_is_lost(staged: Staged, tmp_path: Path) -> None:
    """An agent restarted in a fresh container (no ledger) still counts the hour's actions: its
    events on the server say what it did."""
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi
    from prefect_cancel_doctor.clients.settings import Connection
    from prefect_cancel_doctor.fleet.autopilot import hourly_from_events

    with PrefectApi(Connection(staged.prefect.api_url)) as api:
        # The served cycle ended two runs; the dry run planned for the same two.
        assert hourly_from_events(api, HOST, dry_run=False) == 2
        assert hourly_from_events(api, HOST, dry_run=True) == 2
        assert hourly_from_events(api, "another-host", dry_run=False) == 0
    policy = tmp_path / "hour.toml"
    policy.write_text(
        'name = "hour"\ncauses = ["orphaned_infrastructure", "cancel_not_observed"]\nstuck_for = "0s"\n'
        "max_actions_per_hour = 2\n"
    )
    before, since = _before(staged), datetime.now(timezone.utc)
    done = run_cli("agent", "--once", "--autopilot", str(policy), "--samples", "1", env=staged.env(tmp_path))
    assert done.returncode == 1, done.stderr[-3000:]
    assert not (tmp_path / "state" / "prefect-cancel-doctor" / "autopilot.jsonl").exists()  # a fresh host
    assert _before(staged) == before  # the baseline orphan and the stuck run: nothing signalled
    events = _autopilot_events(staged, since, 2)
    assert set(events) == {"baseline", "stuck"}
    assert {e["resource"]["prefect-cancel-doctor.refusal"] for e in events.values()} == {"hourly_limit"}
    assert "acted on 2 run(s) in the last hour" in events["stuck"]["payload"]["why"]


def test_resolve_through_the_agents_deployment_with_the_same_checks_and_events(
    staged: Staged, agent: Agent
) -> None:
    """The agent's deployment run with `resolve` = a run id, as the UI's Custom run starts it or, here
    first, an Automation's run-deployment action on the doctor's verdict event: that run, stuck in
    Cancelling with its worker dead (`cancel_not_observed`, which the autopilot's policy leaves to
    people), is ended and marked Cancelled; a run that is not stuck, and any run while the kill switch
    is set, is refused and the deployment's run ends Failed, saying why."""
    automation = _call(
        staged,
        "POST",
        "automations/",
        {
            "name": "cancel-doctor: resolve what is not observed",
            "trigger": {
                "type": "event",
                "expect": ["prefect-cancel-doctor.verdict"],
                "match": {"prefect-cancel-doctor.cause": "cancel_not_observed"},
                "posture": "Reactive",
                "threshold": 1,
                "within": 0,
            },
            "actions": [
                {
                    "type": "run-deployment",
                    "source": "selected",
                    "deployment_id": agent.deployment_id,
                    "parameters": {"resolve": "{{ event.payload.flow_run.id }}"},
                }
            ],
        },
    )
    try:
        since = datetime.now(timezone.utc)
        _, state = agent.cycle(staged)  # publishes the stuck run's verdict (its autopilot refuses it)
        assert state == "COMPLETED", agent.log.read_text()[-4000:]
        staged.prefect.wait_until(
            lambda: not staged.alive("stuck"), 120, "the Automation's resolve to end the run"
        )
        staged.prefect.wait_for_state(staged.runs["stuck"], ["CANCELLED"], 30)
    finally:
        _call(staged, "DELETE", f"automations/{automation['id']}")
    message = staged.prefect.read_run(staged.runs["stuck"]).state.message or ""
    assert message.startswith(
        f"Cancelled by prefect-cancel-doctor resolve requested through the agent of host {HOST}: SIGTERM → "
    ), message
    runs = _call(staged, "POST", "flow_runs/filter", {"deployments": {"id": {"any_": [agent.deployment_id]}}})
    (requested,) = [r for r in runs if r["parameters"].get("resolve") == staged.runs["stuck"]]
    staged.prefect.wait_for_state(requested["id"], ["COMPLETED"], 60)
    resolved = [
        e
        for e in _autopilot_events(staged, since, 3).values()  # the cycle's two refusals, then the resolve
        if e["event"] == "prefect-cancel-doctor.resolved"
    ]
    (event,) = resolved
    assert event["resource"]["prefect-cancel-doctor.mode"] == "requested"
    assert "prefect-cancel-doctor.policy" not in event["resource"] and event["payload"]["policy"] is None
    assert event["payload"]["cause"] == "cancel_not_observed"
    assert event["payload"]["ended"] == {
        "resolved": True,
        "state_type": "CANCELLED",
        "state_set": "CANCELLED",
    }

    # Refused: a run that is not stuck (the orphan the autopilot ended: Cancelled, nothing left) ...
    since = datetime.now(timezone.utc)
    run, state = agent.cycle(staged, {"resolve": staged.runs["orphan"]})
    assert state == "FAILED"
    failed = staged.prefect.read_run(run).state
    assert failed is not None and "left to people (not_stuck)" in (failed.message or ""), failed
    (event,) = _autopilot_events(staged, since, 1).values()
    assert event["resource"]["prefect-cancel-doctor.refusal"] == "not_stuck"
    # ... and anything while the kill switch is set: the baseline orphan runs on.
    _call(staged, "POST", "variables/", {"name": "prefect-cancel-doctor-autopilot", "value": "off"})
    try:
        since = datetime.now(timezone.utc)
        run, state = agent.cycle(staged, {"resolve": staged.runs["baseline"]})
    finally:
        _call(staged, "DELETE", "variables/name/prefect-cancel-doctor-autopilot")
    assert state == "FAILED" and staged.alive("baseline")
    (event,) = _autopilot_events(staged, since, 1).values()
    assert event["resource"]["prefect-cancel-doctor.refusal"] == "kill_switch"
