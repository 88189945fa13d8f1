"""The autopilot in the fleet: its kill switch, its events, the line it adds to a run's artifact.

`agent --autopilot POLICY` runs `autopilot_cycle` after each scan, on the runs this host answers
for (`publish.covers`); act/autopilot.py decides and acts. Here:

- the **kill switch**: the Prefect variable `prefect-cancel-doctor-autopilot`, read every cycle
  (one `GET /variables/name/...`). `off` (or `stop`, `false`, `disabled`, `0`) stops every
  agent's autopilot at its next cycle; `dry-run` turns every agent into a dry run; anything else,
  or no such variable, leaves each agent as it was started. A variable that cannot be read stops
  the autopilot too: it acts only when it knows it may.
- **events**, one per run the autopilot looked at, in the scan's own `POST /events`:
  `prefect-cancel-doctor.resolved` (it acted), `prefect-cancel-doctor.resolve-planned` (a dry
  run: what it would have done), `prefect-cancel-doctor.resolve-refused` (left to people, and
  why). Resource: the host (`prefect-cancel-doctor.host.<host>`) with the labels an Automation
  matches on (`prefect-cancel-doctor.cause`, `.mode`, `.policy`, `.refusal`, `.outcome`);
  related: the run, its flow, deployment, work pool and worker, as the verdict event's; payload:
  the decision and why, the plan, what was signalled, how the run ended, and the policy.
- a line under "Autopilot" in the run's Markdown artifact (publish.py writes it with the verdict).
- the **hourly count** of this host's actions: its ledger (act/autopilot.py) or its events on
  the server, whichever says more (an agent restarted in a fresh container keeps its count).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from prefect_cancel_doctor import __version__
from prefect_cancel_doctor.act.autopilot import (
    Action,
    Ledger,
    View,
    requested_policy,
    resolve_requested,
    run_autopilot,
)
from prefect_cancel_doctor.act.policy import Policy
from prefect_cancel_doctor.act.resolve import ActionLog
from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.core.redact import redact_url_passwords
from prefect_cancel_doctor.errors import DoctorError
from prefect_cancel_doctor.fleet.publish import (
    CAUSE_LABEL,
    HOST_RESOURCE,
    PublishOutcome,
    Related,
    Seen,
    covers,
    host_resource,
    publish_round,
    related_resources,
)
from prefect_cancel_doctor.model import Diagnosis

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi

#: The Prefect variable that stops (or dry-runs) every agent's autopilot at its next cycle.
KILL_SWITCH_VARIABLE = "prefect-cancel-doctor-autopilot"
_OFF = {"off", "stop", "stopped", "false", "disabled", "disable", "0", "no"}
_DRY_RUN = {"dry-run", "dry_run", "dryrun"}

#: The autopilot acted on a run (its processes signalled, its state set).
RESOLVED_EVENT = "prefect-cancel-doctor.resolved"
#: A dry run: what the autopilot would have done.
PLANNED_EVENT = "prefect-cancel-doctor.resolve-planned"
#: The autopilot left the run to people, and says why.
REFUSED_EVENT = "prefect-cancel-doctor.resolve-refused"
EVENTS = {"resolved": RESOLVED_EVENT, "planned": PLANNED_EVENT, "refused": REFUSED_EVENT}
#: Resource labels of those events (triggers match labels, not payloads).
MODE_LABEL = "prefect-cancel-doctor.mode"
POLICY_LABEL = "prefect-cancel-doctor.policy"
REFUSAL_LABEL = "prefect-cancel-doctor.refusal"
OUTCOME_LABEL = "prefect-cancel-doctor.outcome"
#: `mode`: the autopilot acting, the autopilot in a dry run, a resolve a person asked for through
#: the agent's deployment (its `resolve` parameter: the Prefect UI, an Automation).
AUTOPILOT = "autopilot"
AUTOPILOT_DRY_RUN = "autopilot-dry-run"
REQUESTED = "requested"
#: Plan lines an event carries at most (a plan names each process it signals).
PLAN_LINES = 30
#: How `agent --autopilot` hands its policy to its flow runs (children of the serving process):
#: the environment, never the deployment's parameters, which anyone who may run a deployment
#: from the UI can change.
AUTOPILOT_ENV = "PCD_AUTOPILOT"
AUTOPILOT_DRY_RUN_ENV = "PCD_AUTOPILOT_DRY_RUN"


@dataclass(frozen=True)
class Autopilot:
    """How an agent's autopilot was started: its policy, and whether it only plans."""

    policy: Policy
    dry_run: bool = False


@dataclass(frozen=True)
class Switch:
    """What the kill switch says this cycle."""

    #: Why the autopilot is off (None: it may act).
    off: str | None = None
    #: Set to dry-run fleet-wide.
    dry_run: bool = False
    #: The variable's value as read (None: no such variable).
    value: str | None = None


def autopilot_from_env(env: Mapping[str, str] | None = None) -> Autopilot | None:
    """The autopilot the agent was started with (`AUTOPILOT_ENV`: `safe` or a policy file, read
    again each cycle, so an edited policy holds from the next), or None when it is off.
    `PolicyError` when the policy cannot be read."""
    import os

    from prefect_cancel_doctor.act.policy import load_policy

    env = os.environ if env is None else env
    spec = (env.get(AUTOPILOT_ENV) or "").strip()
    if not spec:
        return None
    dry_run = (env.get(AUTOPILOT_DRY_RUN_ENV) or "").strip().lower() in ("1", "true", "yes", "on")
    return Autopilot(load_policy(spec), dry_run)


def read_kill_switch(api: PrefectApi) -> Switch:
    """The kill switch, read now; a variable that cannot be read stops the autopilot."""
    try:
        value = api.variable(KILL_SWITCH_VARIABLE)
    except DoctorError as exc:
        return Switch(
            off=f"the kill switch (Prefect variable {KILL_SWITCH_VARIABLE}) could not be read: {exc}"
        )
    if value is None:
        return Switch()
    shown = visible(str(value), 100)
    said = str(value).strip().lower() if isinstance(value, (str, bool, int)) else ""
    if value is False or said in _OFF:
        return Switch(
            off=f"the kill switch is on: Prefect variable {KILL_SWITCH_VARIABLE} = {shown!r}", value=shown
        )
    if said in _DRY_RUN:
        return Switch(dry_run=True, value=shown)
    return Switch(value=shown)


def hourly_from_events(
    api: PrefectApi, host: str, *, dry_run: bool, now: datetime | None = None
) -> int | None:
    """Runs this host's autopilot acted on (a dry run: planned for, distinct) in the last hour, by
    its events on the server; None where they cannot be read."""
    now = now or datetime.now(timezone.utc)
    wanted = {
        "occurred": {
            "since": (now - timedelta(hours=1)).isoformat(),
            "until": (now + timedelta(minutes=5)).isoformat(),
        },
        "event": {"name": [PLANNED_EVENT if dry_run else RESOLVED_EVENT]},
        "resource": {"id": [HOST_RESOURCE + host]},
        "order": "DESC",
    }
    mode = AUTOPILOT_DRY_RUN if dry_run else AUTOPILOT
    runs: list[str] = []
    try:
        for count, event in enumerate(api.events(wanted), 1):
            if event.resource.get(MODE_LABEL) == mode:
                runs.append(str((event.payload.get("flow_run") or {}).get("id")))
            if count >= 1000:
                break
    except DoctorError:
        return None
    return len(set(runs)) if dry_run else len(runs)


@dataclass
class Round:
    """One cycle of the autopilot: what it decided for each run, under which policy and switch."""

    policy: Policy
    dry_run: bool
    switch: Switch
    actions: list[Action] = field(default_factory=list)
    at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    #: A resolve a person asked for (the agent's `resolve` parameter), not the autopilot's cycle.
    requested: bool = False

    @property
    def mode(self) -> str:
        if self.requested:
            return REQUESTED
        return AUTOPILOT_DRY_RUN if self.dry_run else AUTOPILOT

    def counts(self) -> dict[str, int]:
        """How many runs were resolved, planned for and refused."""
        counted = {"resolved": 0, "planned": 0, "refused": 0}
        for action in self.actions:
            counted[action.kind] += 1
        return counted

    def summary(self) -> str:
        """One line for the agent's log."""
        counted = self.counts()
        if self.requested:
            (action,) = self.actions
            return f"resolve requested: {action.line()}"
        head = f"autopilot ({self.mode}, policy {self.policy.name})"
        if self.switch.off:
            head += f", switched off: {self.switch.off}"
        return (
            f"{head}: {counted['resolved']} run(s) resolved, {counted['planned']} planned (dry run), "
            f"{counted['refused']} left to people"
        )

    def settled(self) -> frozenset[str]:
        """The runs this round ended: the verdict taken before is no longer what they are, so none is
        published for them (an Automation on verdicts would act on a run already ended)."""
        return frozenset(
            a.run_id
            for a in self.actions
            if a.kind == "resolved" and a.outcome is not None and a.outcome.resolved
        )

    def notes(self) -> dict[str, list[str]]:
        """Each run's line for its artifact."""
        when = f"{self.at[:19].replace('T', ' ')} UTC"
        who = "resolve requested" if self.requested else f"{self.mode}, policy {self.policy.name}"
        return {action.run_id: [f"{when}, {who}: {action.line()}"] for action in self.actions}

    def events(self, host: str, ids: Mapping[str, Related]) -> list[dict[str, Any]]:
        """One event per run looked at."""
        return [action_event(a, host, self, ids.get(a.run_id, Related())) for a in self.actions]


def action_event(
    action: Action, host: str, round_: Round, ids: Related, now: datetime | None = None
) -> dict[str, Any]:
    """The event of what the autopilot did about one run (`EVENTS[action.kind]`)."""
    d = action.diagnosis
    run = d.flow_run
    assert run is not None
    policy = round_.policy
    resource = host_resource(host) | {CAUSE_LABEL: d.verdict.cause.value, MODE_LABEL: round_.mode}
    if not round_.requested:
        resource[POLICY_LABEL] = _text(policy.name, 100)
    if action.decision.reason is not None:
        resource[REFUSAL_LABEL] = action.decision.reason.value
    outcome = action.outcome
    if outcome is not None:
        resource[OUTCOME_LABEL] = "resolved" if outcome.resolved else "still-running"
    plan = action.plan
    payload: dict[str, Any] = {
        "decision": action.kind,
        "reason": action.decision.reason.value if action.decision.reason else None,
        "why": _text(action.decision.why, 1000),
        "cause": d.verdict.cause.value,
        "confidence": d.verdict.confidence,
        "summary": _text(d.verdict.summary, 1000),
        "flow_run": {
            "id": run.id,
            "name": _text(run.name, 200),
            "state_type": str(run.state_type),
            "cancelling_for_seconds": run.cancelling_for_seconds,
            "work_pool_name": run.work_pool_name,
        },
        "target": _text(d.target.description, 300) if d.target else None,
        "plan": [_text(line, 300) for line in plan.lines(policy.grace_seconds)[:PLAN_LINES]] if plan else [],
        "signalled": [_text(line, 300) for line in outcome.actions[:50]] if outcome else [],
        "still_running": [_text(line, 300) for line in outcome.still_running[:50]] if outcome else [],
        "ended": (
            {"resolved": outcome.resolved, "state_type": action.state_after, "state_set": outcome.final_state}
            if outcome is not None
            else None
        ),
        "policy": None if round_.requested else policy.to_dict(),
        "kill_switch": round_.switch.value,
        "dry_run": round_.dry_run,
        "mode": round_.mode,
        "host": host,
        "doctor_version": __version__,
        "ui_url": d.ui_url,
    }
    return {
        "id": str(uuid.uuid4()),
        "occurred": (now or datetime.now(timezone.utc)).isoformat(),
        "event": EVENTS[action.kind],
        "resource": resource,
        "related": related_resources(d, ids),
        "payload": payload,
    }


def _text(value: object, limit: int) -> str:
    return redact_url_passwords(visible(str(value), limit))


def autopilot_cycle(
    api: PrefectApi,
    runs: list[Diagnosis],
    seen: Seen,
    autopilot: Autopilot,
    *,
    say: Callable[[str], None] = print,
    log: ActionLog | None = None,
    ledger: Ledger | None = None,
    partial: Callable[[], str | None] | None = None,
) -> Round:
    """One cycle on the runs this host answers for: the kill switch read, the hour's count, then
    `act.autopilot.run_autopilot`. `partial()`: why the view of the host's processes is partial
    (default `kinds.process.locate.partial_view`, read only when there is a run to decide on)."""
    mine = [d for d in runs if covers(d, seen)]
    switch = read_kill_switch(api)
    dry_run = autopilot.dry_run or switch.dry_run
    round_ = Round(autopilot.policy, dry_run, switch)
    if not mine:
        return round_
    log = log or ActionLog()
    ledger = ledger or Ledger(log.path.with_name("autopilot.jsonl"))
    counted = ledger.count(seen.host, dry_run=dry_run)
    if not switch.off:
        counted = max(counted, hourly_from_events(api, seen.host, dry_run=dry_run) or 0)
    view = view_of(seen, switch, partial, acted_last_hour=counted)
    round_.actions = run_autopilot(
        mine, api, autopilot.policy, view, dry_run=dry_run, say=say, log=log, ledger=ledger
    )
    return round_


def view_of(
    seen: Seen, switch: Switch, partial: Callable[[], str | None] | None = None, acted_last_hour: int = 0
) -> View:
    """What the autopilot sees on this host now (`partial`: how to tell a partial view, by default
    `partial_view` of this host's /proc)."""
    if partial is None:
        from prefect_cancel_doctor.kinds.process.locate import partial_view

        partial = partial_view
    return View(
        host=seen.host,
        partial=partial(),
        workers=frozenset(seen.workers),
        launched=seen.launched,
        kill_switch=switch.off,
        acted_last_hour=acted_last_hour,
    )


def resolve_and_publish(
    api: PrefectApi,
    run: str,
    seen: Seen,
    *,
    samples: int = 3,
    artifacts: bool = True,
    agent_deployment: str | None = None,
    say: Callable[[str], None] = print,
    log: ActionLog | None = None,
    partial: Callable[[], str | None] | None = None,
) -> tuple[Round, PublishOutcome]:
    """The agent's `resolve` parameter: diagnose that one run (by id or name) now, resolve it as a
    person asked for it (`act.autopilot.resolve_requested`: the kill switch, this host's, a whole
    view, `resolve`'s plan, the re-checks), then publish its verdict and what was done."""
    from prefect_cancel_doctor.scan.engine import Options, diagnose_run

    switch = read_kill_switch(api)
    report = diagnose_run(api, run, Options(samples=samples))
    (d,) = report.runs
    action = resolve_requested(d, api, view_of(seen, switch, partial), say=say, log=log)
    round_ = Round(requested_policy(), False, switch, [action], requested=True)
    outcome = publish_round(api, report, seen, round_, artifacts=artifacts, agent_deployment=agent_deployment)
    return round_, outcome


__all__ = [
    "AUTOPILOT",
    "AUTOPILOT_DRY_RUN",
    "AUTOPILOT_DRY_RUN_ENV",
    "AUTOPILOT_ENV",
    "EVENTS",
    "KILL_SWITCH_VARIABLE",
    "MODE_LABEL",
    "OUTCOME_LABEL",
    "PLANNED_EVENT",
    "POLICY_LABEL",
    "REFUSAL_LABEL",
    "REFUSED_EVENT",
    "REQUESTED",
    "RESOLVED_EVENT",
    "Autopilot",
    "Round",
    "Switch",
    "action_event",
    "autopilot_cycle",
    "autopilot_from_env",
    "hourly_from_events",
    "read_kill_switch",
    "resolve_and_publish",
]
