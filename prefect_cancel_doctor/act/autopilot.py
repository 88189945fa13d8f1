"""The autopilot: stuck cancellations ended without a person, under a policy the team wrote.

Each agent cycle hands its fresh scan here. For every run this host answers for, `decide`
says act or refuse, and why, from the verdict, the policy (policy.py) and what the autopilot
sees (`View`: this host, whether its view of the host's processes is whole, the kill switch,
what it did this cycle and this hour). A run it may act on gets `resolve`'s own plan
(`resolve.make_plan`), is re-read from the API right before acting (a run whose state changed
since the scan is left alone), and is carried out by `resolve.execute` — the same path as
`resolve --yes`: each process re-checked right before it is signalled (same PID, same start
time; a PID reused refuses the plan, nothing signalled), SIGTERM, the policy's grace,
SIGKILL, verified gone, and only then the state set; every step in the action log.

It never acts on a partial view, on a verdict another host published, on a run tied to this
host by nothing but its work pool, nor through another host's API (an ECS task, a Docker
engine elsewhere): only on this host's processes and containers. With `dry_run` it plans and
decides exactly the same, and acts on nothing.

Actions are counted in a ledger beside the action log (`autopilot.jsonl`), for the policy's
hourly limit; the fleet layer adds what the server's events say (an agent restarted in a fresh
container keeps its count).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from prefect_cancel_doctor.act.policy import Policy
from prefect_cancel_doctor.act.resolve import ActionLog, Outcome, Plan, Refused, execute, make_plan
from prefect_cancel_doctor.core.durations import seconds_text
from prefect_cancel_doctor.errors import DoctorError
from prefect_cancel_doctor.model import (
    CONTAINER_NOT_FOUND,
    FINAL_STATES,
    Cause,
    Diagnosis,
    InfraKind,
    Role,
    StateType,
    StrEnum,
)

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi


class Refusal(StrEnum):
    """Why the autopilot left a run to people (the events' `prefect-cancel-doctor.refusal` label)."""

    KILL_SWITCH = "kill_switch"
    OTHER_HOST = "other_host"
    NO_RUN = "no_run"
    PARTIAL_VIEW = "partial_view"
    NOT_HERE = "not_here"
    OUTSIDE_POOLS = "outside_pools"
    CAUSE = "cause"
    CONFIDENCE = "confidence"
    TOO_RECENT = "too_recent"
    CYCLE_LIMIT = "cycle_limit"
    HOURLY_LIMIT = "hourly_limit"
    #: `resolve`'s own plan refuses (uninterruptible I/O, nothing it can tie to the run, ...).
    PLAN = "plan"
    #: The plan would act through an API that reaches beyond this host (an ECS task, a remote engine).
    NOT_LOCAL = "not_local"
    STATE_CHANGED = "state_changed"
    PID_REUSED = "pid_reused"
    ERROR = "error"
    #: A resolve asked for (the agent's `resolve` parameter) of a run that is not stuck: Running,
    #: say, or final with nothing left running here.
    NOT_STUCK = "not_stuck"


@dataclass(frozen=True)
class View:
    """What the autopilot sees when it decides: this host, and what it has done."""

    host: str
    #: Why this doctor's view of the host's processes is partial (`partial_view`); None: whole.
    partial: str | None = None
    #: Workers running on this host, by the name on their command line (`--name`).
    workers: frozenset[str] = frozenset()
    #: Runs this host launched and whose end it did not see (Prefect 3.9's launch traces).
    launched: frozenset[str] = frozenset()
    #: Why the autopilot is switched off fleet-wide (the kill switch), or None.
    kill_switch: str | None = None
    #: Runs acted on (or, in a dry run, planned) this cycle and in the last hour, by this host.
    acted_this_cycle: int = 0
    acted_last_hour: int = 0


@dataclass(frozen=True)
class Decision:
    """Act, or refuse with why."""

    act: bool
    reason: Refusal | None
    why: str

    @classmethod
    def refuse(cls, reason: Refusal, why: str) -> Decision:
        return cls(False, reason, why)


def found_here(d: Diagnosis) -> bool:
    """Whether something of the run was found on this host: its processes, or its container."""
    target = d.target
    if target is None:
        return False
    if any(p.role is not Role.RUNNER for p in target.processes):
        return True
    return target.container is not None and target.container.status != CONTAINER_NOT_FOUND


def tied_here(d: Diagnosis, view: View) -> bool:
    """Whether the run is this host's by more than its work pool: something of it is here, this
    host launched it, or the worker that claimed it runs here."""
    run = d.flow_run
    if run is None:
        return False
    worker = run.labels.get("prefect.worker.name")
    return (
        found_here(d) or run.id in view.launched or (worker not in (None, "") and str(worker) in view.workers)
    )


def decide(d: Diagnosis, policy: Policy, view: View) -> Decision:
    """Act on the run, or refuse and say why; the first refusal that applies, in this order:
    the kill switch; another host's verdict; no run; a partial view; not this host's; a work pool
    outside the policy; a cause outside it; too little confidence; not stuck long enough; the
    cycle's limit; the hour's limit."""
    if view.kill_switch:
        return Decision.refuse(Refusal.KILL_SWITCH, view.kill_switch)
    if d.published is not None:
        return Decision.refuse(
            Refusal.OTHER_HOST,
            f"the verdict is host {d.published.host}'s, read from its event: only that host acts on it",
        )
    run = d.flow_run
    if run is None:
        return Decision.refuse(Refusal.NO_RUN, "no flow run: the autopilot acts only on runs")
    if view.partial:
        return Decision.refuse(
            Refusal.PARTIAL_VIEW,
            f"this doctor cannot read every process on the host, so a process of the run may be one it "
            f"cannot see ({view.partial})",
        )
    if not tied_here(d, view):
        return Decision.refuse(
            Refusal.NOT_HERE,
            f"nothing ties the run to host {view.host} but its work pool: no process or container of it "
            "here, this host did not launch it, and the worker that claimed it does not run here",
        )
    if policy.work_pools and run.work_pool_name not in policy.work_pools:
        return Decision.refuse(
            Refusal.OUTSIDE_POOLS,
            f"work pool {run.work_pool_name or '(none)'} is not among the policy's "
            f"({', '.join(sorted(policy.work_pools))})",
        )
    cause = d.verdict.cause
    if cause not in policy.causes:
        return Decision.refuse(
            Refusal.CAUSE, f"{cause.value} is not among the causes policy {policy.name} acts on"
        )
    if d.verdict.confidence < policy.min_confidence:
        return Decision.refuse(
            Refusal.CONFIDENCE,
            f"confidence {d.verdict.confidence:g} is below the policy's {policy.min_confidence:g}",
        )
    stuck = run.cancelling_for_seconds
    if policy.stuck_for_seconds > 0 and (stuck is None or stuck < policy.stuck_for_seconds):
        since = (
            "for an unknown time (it never entered Cancelling)" if stuck is None else f"{seconds_text(stuck)}"
        )
        return Decision.refuse(
            Refusal.TOO_RECENT,
            f"stuck {since}; the policy waits {seconds_text(policy.stuck_for_seconds)}",
        )
    if view.acted_this_cycle >= policy.max_runs_per_cycle:
        return Decision.refuse(
            Refusal.CYCLE_LIMIT,
            f"this cycle already acted on {view.acted_this_cycle} run(s), the policy's most",
        )
    if view.acted_last_hour >= policy.max_actions_per_hour:
        return Decision.refuse(
            Refusal.HOURLY_LIMIT,
            f"this host's autopilot acted on {view.acted_last_hour} run(s) in the last hour, "
            "the policy's most",
        )
    return Decision(
        True, None, f"{cause.value} at confidence {d.verdict.confidence:g}, stuck {seconds_text(stuck)}"
    )


def plan_here(d: Diagnosis) -> tuple[Plan | None, Decision | None]:
    """`resolve`'s plan for the run, or why the autopilot will not carry it out: `resolve` refuses
    it, it has nothing to do, or it would act through an API that reaches beyond this host."""
    try:
        plan = make_plan(d)
    except Refused as exc:
        return None, Decision.refuse(Refusal.PLAN, str(exc))
    if plan.refusal:
        return plan, Decision.refuse(Refusal.PLAN, plan.refusal)
    if not (plan.processes or plan.stopper is not None or plan.set_cancelled):
        return plan, Decision.refuse(
            Refusal.PLAN, "nothing to do: the run is final and nothing of it runs here"
        )
    target = d.target
    kind = target.kind if target is not None else InfraKind.NONE
    local = kind in (InfraKind.PROCESS, InfraKind.NONE) or (kind is InfraKind.DOCKER and _local_engine())
    if (plan.processes or plan.stopper is not None) and not local:
        where = target.description if target is not None else "the target"
        return plan, Decision.refuse(
            Refusal.NOT_LOCAL,
            f"{where} is a {kind.value} target: the autopilot stops only this host's processes and its "
            "local Docker engine's containers; `resolve` it by hand",
        )
    return plan, None


def _local_engine() -> bool:
    """Whether the Docker engine the doctor talks to is this host's (a unix socket)."""
    from prefect_cancel_doctor.clients.docker_api.endpoint import resolve_endpoint

    try:
        return resolve_endpoint().socket_path is not None
    except DoctorError:
        return False


@dataclass
class Action:
    """What the autopilot did about one run: resolved, planned (a dry run) or refused."""

    diagnosis: Diagnosis
    decision: Decision
    plan: Plan | None = None
    outcome: Outcome | None = None
    dry_run: bool = False
    #: The run's state type once it was over (read back from the API), where it acted.
    state_after: str | None = None
    #: What was said while acting (resolve's lines).
    said: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """`resolved`, `planned` (a dry run's would-act) or `refused`."""
        if not self.decision.act:
            return "refused"
        return "planned" if self.dry_run else "resolved"

    @property
    def run_id(self) -> str:
        return self.diagnosis.flow_run.id if self.diagnosis.flow_run else ""

    def line(self) -> str:
        """One line for the log and the run's artifact."""
        run = self.diagnosis.flow_run
        name = run.name if run else "?"
        cause = self.diagnosis.verdict.cause.value
        if self.kind == "refused":
            reason = self.decision.reason.value if self.decision.reason else "?"
            return f"run {name} ({cause}): left to people ({reason}): {self.decision.why}"
        if self.kind == "planned":
            steps = "; ".join(self.plan.steps(0)) if self.plan else "?"
            return f"run {name} ({cause}): dry run, would have: {steps}"
        outcome = self.outcome
        done = "; ".join(outcome.actions) if outcome and outcome.actions else "nothing left to signal"
        if outcome is not None and outcome.still_running:
            return f"run {name} ({cause}): {done}; still running: {', '.join(outcome.still_running)}"
        return f"run {name} ({cause}): resolved: {done}; the run is {self.state_after or '?'}"


class Ledger:
    """The autopilot's actions on this host, one JSON line each, for its hourly limit."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or ActionLog().path.with_name("autopilot.jsonl")

    def record(self, run_id: str, host: str, *, dry_run: bool, now: datetime | None = None) -> None:
        entry = {
            "time": (now or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
            "run": run_id,
            "host": host,
            "dry_run": dry_run,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as ledger:
            ledger.write(json.dumps(entry) + "\n")

    def count(self, host: str, *, dry_run: bool, now: datetime | None = None) -> int:
        """Runs acted on by this host in the last hour (a dry run's: distinct runs, as a run it only
        planned for comes back every cycle)."""
        since = (now or datetime.now(timezone.utc)) - timedelta(hours=1)
        runs: list[str] = []
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()[-10_000:]
        except OSError:
            return 0
        for line in lines:
            try:
                entry = json.loads(line)
                when = datetime.fromisoformat(entry["time"])
            except (ValueError, KeyError, TypeError):
                continue
            if entry.get("host") == host and entry.get("dry_run") is dry_run and when >= since:
                runs.append(str(entry.get("run")))
        return len(set(runs)) if dry_run else len(runs)


def run_autopilot(
    diagnoses: Iterable[Diagnosis],
    api: PrefectApi,
    policy: Policy,
    view: View,
    *,
    dry_run: bool = False,
    say: Callable[[str], None] = print,
    log: ActionLog | None = None,
    ledger: Ledger | None = None,
) -> list[Action]:
    """Decide on every run (the longest stuck first) and carry out what the policy allows.

    `view.acted_this_cycle`/`acted_last_hour` start the counts; each run acted on (or planned,
    in a dry run) adds one. Never raises for a run: what goes wrong is that run's refusal."""
    log = log or ActionLog()
    ledger = ledger or Ledger(log.path.with_name("autopilot.jsonl"))
    ordered = sorted(diagnoses, key=lambda d: -((d.flow_run and d.flow_run.cancelling_for_seconds) or 0.0))
    actions = []
    for d in ordered:
        action = _one(d, api, policy, view, dry_run=dry_run, say=say, log=log)
        if action.decision.act:
            view = replace(
                view, acted_this_cycle=view.acted_this_cycle + 1, acted_last_hour=view.acted_last_hour + 1
            )
            ledger.record(action.run_id, view.host, dry_run=dry_run)
        say(f"autopilot: {action.line()}")
        actions.append(action)
    return actions


def _one(
    d: Diagnosis,
    api: PrefectApi,
    policy: Policy,
    view: View,
    *,
    dry_run: bool,
    say: Callable[[str], None],
    log: ActionLog,
    by: str | None = None,
) -> Action:
    decision = decide(d, policy, view)
    if not decision.act:
        return Action(d, decision, dry_run=dry_run)
    plan, refused = plan_here(d)
    if refused is not None:
        return Action(d, refused, plan, dry_run=dry_run)
    assert plan is not None and d.flow_run is not None
    if dry_run:
        return Action(d, decision, plan, dry_run=True)
    said: list[str] = []
    try:
        # Right before acting: the run as the API holds it now. A run that left the state it was
        # diagnosed in (a worker finished the cancel, someone retried it) is no longer this verdict's.
        now = api.flow_run(d.flow_run.id).state_type
        if now != d.flow_run.state_type:
            why = f"the run went from {d.flow_run.state_type} to {now} since it was diagnosed"
            return Action(d, Decision.refuse(Refusal.STATE_CHANGED, why), plan)
        by = by or f"autopilot (host {view.host}, policy {policy.name})"
        outcome = execute(plan, api, grace=policy.grace_seconds, say=said.append, log=log, by=by)
    except Refused as exc:  # a PID reused since the plan: nothing was signalled
        return Action(d, Decision.refuse(Refusal.PID_REUSED, str(exc)), plan, said=said)
    except DoctorError as exc:
        return Action(d, Decision.refuse(Refusal.ERROR, str(exc)), plan, said=said)
    for line in said:
        say(line)
    try:
        after: str | None = str(api.flow_run(d.flow_run.id).state_type)
    except DoctorError:
        after = outcome.final_state
    return Action(d, decision, plan, outcome, state_after=after, said=said)


def requested_policy(grace_seconds: float = 30.0) -> Policy:
    """What a resolve asked for by a person (the agent's `resolve` parameter) is held to: no policy
    of causes, confidence, time or limits — the person decided that — only `decide`'s view checks
    (the kill switch, this host's, a whole view) and `resolve`'s own plan, which refuses what it
    always refuses."""
    return Policy(
        "requested",
        frozenset(Cause),
        min_confidence=0.0,
        stuck_for_seconds=0.0,
        max_runs_per_cycle=1,
        max_actions_per_hour=1_000_000,
        grace_seconds=grace_seconds,
    )


def resolve_requested(
    d: Diagnosis,
    api: PrefectApi,
    view: View,
    *,
    grace: float = 30.0,
    say: Callable[[str], None] = print,
    log: ActionLog | None = None,
) -> Action:
    """A resolve a person asked for through the agent's deployment (the Prefect UI, an Automation):
    `decide` and act as the autopilot does under `requested_policy`, on a run that is stuck (in
    Cancelling, or final with something of it still running here). Not counted in the autopilot's
    hour."""
    run = d.flow_run
    if run is not None and not (
        run.state_type == StateType.CANCELLING or (run.state_type in FINAL_STATES and found_here(d))
    ):
        why = (
            f"the run is {run.state_name or run.state_type}: only a run stuck in Cancelling, or a final run "
            "whose processes still run here, is resolved this way"
        )
        action = Action(d, Decision.refuse(Refusal.NOT_STUCK, why))
    else:
        by = f"resolve requested through the agent of host {view.host}"
        action = _one(
            d, api, requested_policy(grace), view, dry_run=False, say=say, log=log or ActionLog(), by=by
        )
    say(f"resolve: {action.line()}")
    return action


__all__ = [
    "Action",
    "Decision",
    "Ledger",
    "Refusal",
    "View",
    "decide",
    "found_here",
    "plan_here",
    "requested_policy",
    "resolve_requested",
    "run_autopilot",
    "tied_here",
]
