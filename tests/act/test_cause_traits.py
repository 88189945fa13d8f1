"""What a cause lets the doctor do is read from one table (`model.TRAITS`): the verdict's
"stop it now" commands and `resolve`'s plan never disagree on it."""

from __future__ import annotations

import pytest

from prefect_cancel_doctor.act import resolve
from prefect_cancel_doctor.act.resolve import make_plan
from prefect_cancel_doctor.diagnose.evidence import Evidence
from prefect_cancel_doctor.diagnose.rules import stop_commands
from prefect_cancel_doctor.model import (
    TRAITS,
    Cause,
    Diagnosis,
    FlowRunRef,
    InfraKind,
    ProcessSample,
    Role,
    StateType,
    Target,
    Verdict,
)
from tests.helpers import proc_snapshot

RUN_ID = "0b6c9d6e-0000-4000-8000-000000000001"


def _run_of_this_host(role: Role) -> Evidence:
    """A Cancelling run whose one process (by PREFECT__FLOW_RUN_ID) plays `role`."""
    proc = proc_snapshot(4242, ("python", "-m", "prefect.engine"), flow_run_id=RUN_ID)
    run = FlowRunRef(
        id=RUN_ID,
        name="brave-otter",
        flow_name="etl",
        deployment_name=None,
        work_pool_name="pool",
        state_type=StateType.CANCELLING,
        state_name="Cancelling",
        state_message=None,
        start_time="2026-11-27T10:00:00Z",
        infrastructure_pid="4242",
        labels={},
        cancelling_for_seconds=900.0,
        cancelling_since="2026-11-27T10:05:00Z",
    )
    sample = ProcessSample(4242, role, proc, (), native=False)
    return Evidence(run, Target(InfraKind.PROCESS, "test", processes=(sample,)))


def test_every_cause_has_its_traits() -> None:
    assert set(TRAITS) == set(Cause)


def test_resolve_has_words_for_every_refusal_and_every_straight_sigkill() -> None:
    assert set(resolve._REFUSED) == {c for c in Cause if not c.allows_action}
    assert set(resolve._SIGTERM_CANNOT_ACT) == {c for c in Cause if c.sigterm_useless}


@pytest.mark.parametrize("cause", list(Cause))
def test_stop_now_and_resolve_agree_on_a_run_of_this_hosts_processes(cause: Cause) -> None:
    ev = _run_of_this_host(Role.HOOK if cause is Cause.CANCELLATION_HOOK_HANG else Role.ENGINE)
    plan = make_plan(Diagnosis(ev.run, ev.target, Verdict(cause, "summary", 0.9)))
    commands = stop_commands(ev, cause)
    assert bool(plan.refusal) == (not commands), plan.refusal
    if commands:
        assert [p.pid for p in plan.processes] == [4242]
        assert commands[0].startswith("kill -")
        straight = commands[0].startswith("kill -KILL")
        assert straight == bool(plan.straight_to_sigkill), (commands[0], plan.straight_to_sigkill)
