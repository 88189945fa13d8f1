"""`resolve`'s plan follows the verdict: what it will touch, in which order, and what it refuses."""

from __future__ import annotations

import pytest

from prefect_cancel_doctor.act.resolve import Plan, make_plan
from prefect_cancel_doctor.model import Cause, Diagnosis, Role, Target, Verdict
from tests.diagnose.test_rules import evidence, process, run_ref


def _diagnosis(cause: Cause, *processes: object, state: str = "CANCELLING") -> Diagnosis:
    ev = evidence(*processes, run=run_ref(state))  # type: ignore[arg-type]
    target = Target("process", "local", processes=ev.processes) if ev.target is None else ev.target
    verdict = Verdict(cause, "summary", 0.9, None, (), ())
    return Diagnosis(ev.run, target, verdict)


@pytest.mark.parametrize("cause", [Cause.NOT_ATTACHABLE, Cause.UNKNOWN, Cause.UNINTERRUPTIBLE_IO])
def test_causes_that_cannot_be_acted_on_are_refused(cause: Cause) -> None:
    plan = make_plan(_diagnosis(cause))
    assert plan.refusal and plan.steps(30)[0].startswith("refused")


def test_gone_only_sets_the_state() -> None:
    plan = make_plan(_diagnosis(Cause.INFRASTRUCTURE_GONE))
    assert plan.processes == () and plan.set_cancelled
    assert plan.steps(30) == ["set the run's state to Cancelled through the API (frees its concurrency slot)"]


def test_ignored_sigterm_goes_straight_to_sigkill() -> None:
    plan = make_plan(_diagnosis(Cause.SIGNAL_IGNORED, process("sleep_main_native")))
    assert plan.straight_to_sigkill and plan.steps(30)[0].startswith("SIGKILL")


def test_a_final_run_is_not_marked_again() -> None:
    plan = make_plan(
        _diagnosis(Cause.ORPHANED_INFRASTRUCTURE, process("sleep_main_native"), state="CANCELLED")
    )
    assert isinstance(plan, Plan) and not plan.set_cancelled


def test_the_processes_are_listed_under_the_step_that_signals_them() -> None:
    plan = make_plan(_diagnosis(Cause.CANCEL_NOT_OBSERVED, process("sleep_main_native", role=Role.ENGINE)))
    assert plan.processes, "the run's process is in the plan"
    lines = plan.lines(30)
    assert lines[0] == f"plan for run {plan.run_name} ({plan.run_id}), cancel_not_observed:"
    assert lines[1].startswith("  1. SIGTERM ") and str(plan.processes[0].pid) in lines[1]
    assert lines[2].startswith(f"     {plan.processes[0].pid} ") and "(matched by " in lines[2]
    assert lines[3].startswith("  2. verify") and lines[4].startswith("  3. set the run's state")
    assert len(lines) == 5
