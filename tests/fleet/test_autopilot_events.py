"""The autopilot's events, its artifact line and its kill switch, without a server.

A real server reads them back in tests/fleet/test_autopilot_server.py (where the kill switch is a
real Prefect variable); here the shapes, and the kill switch's faults (an API that refuses or
fails), replayed with httpx.MockTransport: a real server does not fail on demand.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import httpx
import pytest

from prefect_cancel_doctor import __version__
from prefect_cancel_doctor.act.autopilot import Action, Decision, Refusal
from prefect_cancel_doctor.act.policy import PolicyError, safe_policy
from prefect_cancel_doctor.act.resolve import Outcome, make_plan
from prefect_cancel_doctor.clients import prefect_api
from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.fleet.artifact import artifact_markdown
from prefect_cancel_doctor.fleet.autopilot import (
    KILL_SWITCH_VARIABLE,
    PLANNED_EVENT,
    REFUSED_EVENT,
    RESOLVED_EVENT,
    Round,
    Switch,
    action_event,
    autopilot_from_env,
    read_kill_switch,
)
from prefect_cancel_doctor.fleet.publish import Related
from prefect_cancel_doctor.model import Cause, Diagnosis, InfraKind, Role, Target, Verdict
from tests.diagnose.test_rules import process, run_ref

IDS = Related(flow_id="f-1", deployment_id="d-1", work_pool_id="p-1")


def _orphan(name: str = "brave-otter") -> Diagnosis:
    run = dataclasses.replace(
        run_ref("CANCELLED"),
        name=name,
        labels={"prefect.worker.name": "w1", "prefect.worker.type": "process"},
    )
    target = Target(
        InfraKind.PROCESS, "local process", processes=(process("sleep_main_native", role=Role.ENGINE),)
    )
    return Diagnosis(
        run, target, Verdict(Cause.ORPHANED_INFRASTRUCTURE, "The run was marked Cancelled but …", 0.95)
    )


def test_a_resolved_run_is_an_event_with_the_plan_what_was_signalled_how_it_ended_and_the_policy() -> None:
    d = _orphan()
    plan = make_plan(d)
    outcome = Outcome(actions=[f"SIGTERM → {plan.processes[0].pid}: sent"])
    action = Action(
        d,
        Decision(True, None, "orphaned_infrastructure at confidence 0.95, stuck 15m"),
        plan,
        outcome,
        state_after="CANCELLED",
    )
    round_ = Round(safe_policy(), False, Switch())
    event = action_event(action, "node-7", round_, IDS)
    assert event["event"] == RESOLVED_EVENT
    assert event["resource"] == {
        "prefect.resource.id": "prefect-cancel-doctor.host.node-7",
        "prefect.resource.name": "node-7",
        "prefect-cancel-doctor.version": __version__,
        "prefect-cancel-doctor.cause": "orphaned_infrastructure",
        "prefect-cancel-doctor.mode": "autopilot",
        "prefect-cancel-doctor.policy": "safe",
        "prefect-cancel-doctor.outcome": "resolved",
    }
    assert [(r["prefect.resource.id"], r["prefect.resource.role"]) for r in event["related"]] == [
        (f"prefect.flow-run.{d.flow_run.id if d.flow_run else ''}", "flow-run"),
        ("prefect.flow.f-1", "flow"),
        ("prefect.deployment.d-1", "deployment"),
        ("prefect.work-pool.p-1", "work-pool"),
        ("prefect.worker.process.w1", "worker"),
    ]
    payload = event["payload"]
    assert payload["decision"] == "resolved" and payload["reason"] is None
    assert payload["plan"] == plan.lines(30)
    assert payload["signalled"] == outcome.actions and payload["still_running"] == []
    assert payload["ended"] == {"resolved": True, "state_type": "CANCELLED", "state_set": None}
    assert payload["policy"] == safe_policy().to_dict()
    assert payload["flow_run"]["state_type"] == "CANCELLED" and payload["host"] == "node-7"


def test_a_refusal_and_a_dry_runs_plan_are_events_of_their_own() -> None:
    d = _orphan()
    refused = Action(d, Decision.refuse(Refusal.CONFIDENCE, "confidence 0.85 is below the policy's 0.9"))
    event = action_event(refused, "node-7", Round(safe_policy(), False, Switch()), IDS)
    assert event["event"] == REFUSED_EVENT
    assert event["resource"]["prefect-cancel-doctor.refusal"] == "confidence"
    assert "prefect-cancel-doctor.outcome" not in event["resource"]
    assert (
        event["payload"]["why"] == "confidence 0.85 is below the policy's 0.9"
        and event["payload"]["plan"] == []
    )
    planned = Action(d, Decision(True, None, "…"), make_plan(d), dry_run=True)
    event = action_event(
        planned, "node-7", Round(safe_policy(), True, Switch(dry_run=True, value="dry-run")), IDS
    )
    assert event["event"] == PLANNED_EVENT
    assert event["resource"]["prefect-cancel-doctor.mode"] == "autopilot-dry-run"
    assert event["payload"]["dry_run"] is True and event["payload"]["kill_switch"] == "dry-run"
    assert event["payload"]["signalled"] == [] and event["payload"]["ended"] is None


def test_the_runs_artifact_says_what_the_autopilot_did_first_and_inert() -> None:
    d = _orphan(name="evil-*run*-[x](http://e.test)")
    plan = make_plan(d)
    action = Action(
        d, Decision(True, None, "…"), plan, Outcome(actions=["SIGTERM → 1: sent"]), state_after="CANCELLED"
    )
    round_ = Round(safe_policy(), False, Switch(), [action], at="2026-12-06T12:00:00+00:00")
    (note,) = round_.notes()[action.run_id]
    assert note == (
        "2026-12-06 12:00:00 UTC, autopilot, policy safe: run evil-*run*-[x](http://e.test) "
        "(orphaned_infrastructure): resolved: SIGTERM → 1: sent; the run is CANCELLED"
    )
    markdown = artifact_markdown(d, "node-7", None, "2026-12-06T12:00:01+00:00", [note])
    lines = markdown.splitlines()
    assert lines[4] == "## Autopilot"
    assert lines[6].startswith(
        "- 2026-12-06 12:00:00 UTC, autopilot, policy safe: run evil-\\*run\\*-\\[x\\]"
    )
    assert "[x](http" not in lines[6]  # escaped: no link a run's name could plant
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[0] == "## Autopilot" and len(headings) > 1  # first, then the run's verdict
    assert artifact_markdown(d, "node-7", None, "2026-12-06T12:00:01+00:00").count("## Autopilot") == 0


def _switch(handler: httpx.MockTransport) -> Switch:
    with PrefectApi(Connection("http://prefect.test/api"), transport=handler) as api:
        return read_kill_switch(api)


def test_the_kill_switch_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefect_api.time, "sleep", lambda seconds: None)

    def answering(status: int, value: object = None) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            assert request.url.path == f"/api/variables/name/{KILL_SWITCH_VARIABLE}"
            return httpx.Response(status, json={"name": KILL_SWITCH_VARIABLE, "value": value})

        return httpx.MockTransport(handler)

    assert _switch(answering(404)) == Switch()  # no such variable: as the agent was started
    assert _switch(answering(200, "on")) == Switch(value="on")
    for off in ("off", "OFF", "stop", False, "disabled"):
        assert _switch(answering(200, off)).off, off
    assert _switch(answering(200, "dry-run")) == Switch(dry_run=True, value="dry-run")
    # It acts only when it knows it may: a switch it cannot read is off.
    for status in (403, 500):
        switch = _switch(answering(status))
        assert switch.off and "could not be read" in switch.off and str(status) in switch.off


def test_the_policy_comes_from_the_agents_environment(tmp_path: Path) -> None:
    assert autopilot_from_env({}) is None
    pilot = autopilot_from_env({"PCD_AUTOPILOT": "safe", "PCD_AUTOPILOT_DRY_RUN": "true"})
    assert pilot is not None and pilot.policy == safe_policy() and pilot.dry_run
    policy = tmp_path / "p.toml"
    policy.write_text('causes = ["orphaned_infrastructure"]\n')
    pilot = autopilot_from_env({"PCD_AUTOPILOT": str(policy)})
    assert pilot is not None and pilot.policy.name == "p" and not pilot.dry_run
    policy.write_text("causes = [")  # edited between two cycles: the next cycle says so
    with pytest.raises(PolicyError):
        autopilot_from_env({"PCD_AUTOPILOT": str(policy)})
