"""The autopilot's decision: act, or refuse and say why — one test per refusal, and what it plans.

(The same decisions carried out on real runs and read back from a real server:
tests/fleet/test_autopilot_server.py.)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from prefect_cancel_doctor.act.autopilot import (
    Decision,
    Ledger,
    Refusal,
    View,
    decide,
    plan_here,
    run_autopilot,
)
from prefect_cancel_doctor.act.policy import Policy, safe_policy
from prefect_cancel_doctor.act.resolve import ActionLog
from prefect_cancel_doctor.model import Cause, Diagnosis, InfraKind, Published, Target, Verdict
from tests.diagnose.test_rules import process, run_ref

HOST = "node-7"
PARTIAL = "partial view: this doctor (user 1001) cannot read the environment of 3 process(es) on this host"


def _orphan(
    cause: Cause = Cause.ORPHANED_INFRASTRUCTURE,
    confidence: float = 0.95,
    *,
    state: str = "CANCELLED",
    found: bool = True,
    run_id: str | None = None,
    **run_changes: object,
) -> Diagnosis:
    """A run whose engine still runs on this host (its process, found by its PREFECT__FLOW_RUN_ID)."""
    run = run_ref(state, **run_changes)
    if run_id is not None:
        run = dataclasses.replace(run, id=run_id)
    processes = (process("sleep_main_native"),) if found else ()
    if found and run_id is not None:
        sample = processes[0]
        assert sample.proc is not None
        processes = (dataclasses.replace(sample, proc=dataclasses.replace(sample.proc, flow_run_id=run_id)),)
    target = Target(InfraKind.PROCESS, "local process", processes=processes)
    return Diagnosis(run, target, Verdict(cause, "summary", confidence))


def _now_policy(**changes: object) -> Policy:
    """`safe`, without its 10 minutes (the runs here have been stuck 15)."""
    return dataclasses.replace(safe_policy(), **changes)  # type: ignore[arg-type]


def test_an_orphan_stuck_long_enough_under_the_safe_policy_is_acted_on() -> None:
    decision = decide(_orphan(), safe_policy(), View(HOST))
    assert decision == Decision(True, None, "orphaned_infrastructure at confidence 0.95, stuck 15m")


REFUSALS: dict[str, tuple[Refusal, Callable[[], tuple[Diagnosis, Policy, View]], str]] = {
    "a cause outside the policy": (
        Refusal.CAUSE,
        lambda: (_orphan(Cause.CANCEL_NOT_OBSERVED, state="CANCELLING"), safe_policy(), View(HOST)),
        "cancel_not_observed is not among the causes policy safe acts on",
    ),
    "confidence below the policy's": (
        Refusal.CONFIDENCE,
        lambda: (_orphan(confidence=0.85), safe_policy(), View(HOST)),
        "confidence 0.85 is below the policy's 0.9",
    ),
    "stuck not long enough": (
        Refusal.TOO_RECENT,
        lambda: (_orphan(cancelling_for_seconds=240.0), safe_policy(), View(HOST)),
        "stuck 4m00s; the policy waits 10m",
    ),
    "stuck for an unknown time": (
        Refusal.TOO_RECENT,
        lambda: (_orphan(cancelling_for_seconds=None), safe_policy(), View(HOST)),
        "stuck for an unknown time",
    ),
    "a partial (non-root) view": (
        Refusal.PARTIAL_VIEW,
        lambda: (_orphan(), safe_policy(), View(HOST, partial=PARTIAL)),
        "cannot read every process on the host",
    ),
    "a verdict another host published": (
        Refusal.OTHER_HOST,
        lambda: (
            dataclasses.replace(
                _orphan(), published=Published("node-9", "2026-11-27T10:20:00Z", 30.0, True, "0.1.0", "e1")
            ),
            safe_policy(),
            View(HOST),
        ),
        "the verdict is host node-9's",
    ),
    "the per-cycle limit reached": (
        Refusal.CYCLE_LIMIT,
        lambda: (_orphan(), safe_policy(), View(HOST, acted_this_cycle=3)),
        "this cycle already acted on 3 run(s)",
    ),
    "the per-hour limit reached": (
        Refusal.HOURLY_LIMIT,
        lambda: (_orphan(), safe_policy(), View(HOST, acted_last_hour=10)),
        "acted on 10 run(s) in the last hour",
    ),
    "the kill switch on": (
        Refusal.KILL_SWITCH,
        lambda: (_orphan(), safe_policy(), View(HOST, kill_switch="the kill switch is off")),
        "the kill switch is off",
    ),
    "a run tied to this host by its pool only": (
        Refusal.NOT_HERE,
        # Nothing of it here, not launched here, and its worker (w1) does not run here.
        lambda: (
            _orphan(Cause.INFRASTRUCTURE_GONE, state="CANCELLING", found=False),
            safe_policy(),
            View(HOST),
        ),
        "nothing ties the run to host node-7 but its work pool",
    ),
    "a work pool outside the policy's": (
        Refusal.OUTSIDE_POOLS,
        lambda: (_orphan(), _now_policy(work_pools=frozenset({"etl"})), View(HOST)),
        "work pool pool is not among the policy's (etl)",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_each_refusal_says_why(case: str) -> None:
    reason, make, why = REFUSALS[case]
    decision = decide(*make())
    assert not decision.act and decision.reason is reason, decision
    assert why in decision.why


def test_the_kill_switch_is_said_before_anything_else() -> None:
    published = Published("node-9", "2026-11-27T10:20:00Z", 30.0, True, "0.1.0", "e1")
    d = dataclasses.replace(_orphan(Cause.CANCEL_NOT_OBSERVED, confidence=0.1), published=published)
    view = View(HOST, partial=PARTIAL, kill_switch="off", acted_this_cycle=99, acted_last_hour=99)
    assert decide(d, safe_policy(), view).reason is Refusal.KILL_SWITCH


def test_a_run_gone_from_this_host_is_its_when_its_worker_runs_here_or_this_host_launched_it() -> None:
    gone = _orphan(Cause.INFRASTRUCTURE_GONE, 0.9, state="CANCELLING", found=False)
    assert decide(gone, safe_policy(), View(HOST, workers=frozenset({"w1"}))).act
    launched = frozenset({gone.flow_run.id}) if gone.flow_run else frozenset()
    assert decide(gone, safe_policy(), View(HOST, launched=launched)).act
    plan, refused = plan_here(gone)
    assert refused is None and plan is not None and plan.set_cancelled and not plan.processes


def test_a_pod_or_a_task_is_not_stopped_by_the_autopilot() -> None:
    d = _orphan()
    assert d.target is not None
    pod = dataclasses.replace(
        d, target=dataclasses.replace(d.target, kind=InfraKind.KUBERNETES, description="pod etl-x")
    )
    plan, refused = plan_here(pod)
    assert plan is not None and plan.processes  # resolve would signal the pod's processes here ...
    assert (
        refused is not None and refused.reason is Refusal.NOT_LOCAL
    )  # ... the autopilot leaves it to people
    assert "pod etl-x is a kubernetes target" in refused.why
    assert plan_here(d)[1] is None  # the same run as this host's process is acted on


def test_a_final_run_with_nothing_left_is_not_planned() -> None:
    _plan, refused = plan_here(_orphan(found=False))
    assert refused is not None and refused.reason is Refusal.PLAN and "nothing to do" in refused.why


def test_a_dry_run_plans_what_it_would_do_and_counts_its_limits(tmp_path: Path) -> None:
    ids = [f"0b6c9d6e-0000-4000-8000-00000000000{n}" for n in (1, 2, 3)]
    runs = [_orphan(run_id=run_id, cancelling_for_seconds=900.0 + n) for n, run_id in enumerate(ids)]
    policy = _now_policy(max_runs_per_cycle=2, max_actions_per_hour=3)
    log = ActionLog(tmp_path / "actions.jsonl")
    ledger = Ledger(tmp_path / "autopilot.jsonl")
    said: list[str] = []

    def cycle(view: View) -> list[tuple[str, str, Refusal | None]]:
        actions = run_autopilot(
            runs,
            api=None,  # type: ignore[arg-type]  # a dry run asks the API nothing
            policy=policy,
            view=view,
            dry_run=True,
            say=said.append,
            log=log,
            ledger=ledger,
        )
        return [(a.run_id, a.kind, a.decision.reason) for a in actions]

    # The longest stuck first; the third is over the cycle's limit.
    assert cycle(View(HOST)) == [
        (ids[2], "planned", None),
        (ids[1], "planned", None),
        (ids[0], "refused", Refusal.CYCLE_LIMIT),
    ]
    assert any("dry run, would have: SIGTERM " in line for line in said), said
    assert not log.path.exists()  # nothing was done, so nothing is in the action log
    entries = [json.loads(line) for line in ledger.path.read_text().splitlines()]
    assert [(e["run"], e["dry_run"], e["host"]) for e in entries] == [
        (ids[2], True, HOST),
        (ids[1], True, HOST),
    ]
    # A dry run counts the runs it would have acted on, once each (they come back every cycle, as
    # nothing was done to them): two of the hour's three are used, so one more is planned.
    assert ledger.count(HOST, dry_run=True) == 2 and ledger.count(HOST, dry_run=False) == 0
    assert cycle(View(HOST, acted_last_hour=ledger.count(HOST, dry_run=True))) == [
        (ids[2], "planned", None),
        (ids[1], "refused", Refusal.HOURLY_LIMIT),
        (ids[0], "refused", Refusal.HOURLY_LIMIT),
    ]
    assert ledger.count(HOST, dry_run=True) == 2
    assert ledger.count("node-8", dry_run=True) == 0  # another host's autopilot counts its own
