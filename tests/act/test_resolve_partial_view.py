"""`resolve` on a partial view: no state change that says nothing runs, unless forced and confirmed.

(The real thing, a non-root doctor and a root-owned engine: tests/guarantees/test_partial_view.py.)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from prefect_cancel_doctor.act.resolve import Declined, Outcome, make_plan, resolve_diagnosed
from prefect_cancel_doctor.model import Cause, Diagnosis, InfraKind, Target, Verdict
from tests.diagnose.test_rules import evidence, process, run_ref

PARTIAL = "partial view: the environment of 3 process(es) on this host cannot be read by this doctor"


def _diagnosis(
    cause: Cause, *processes: Any, infrastructure_pid: str = "4242", kind: str = "process"
) -> Diagnosis:
    ev = evidence(*processes, run=run_ref(infrastructure_pid=infrastructure_pid))
    target = Target(InfraKind(kind), "local", processes=ev.processes)
    return Diagnosis(ev.run, target, Verdict(cause, "summary", 0.9, None, (), ()))


@pytest.mark.parametrize("cause", [Cause.INFRASTRUCTURE_GONE, Cause.NOT_ATTACHABLE])
def test_nothing_found_on_a_partial_view_is_refused_and_says_what_was_not_read(cause: Cause) -> None:
    plan = make_plan(_diagnosis(cause), partial=PARTIAL)
    assert plan.refusal is not None and PARTIAL in plan.refusal and "--force-state" in plan.refusal
    assert not plan.set_cancelled


@pytest.mark.parametrize("cause", [Cause.INFRASTRUCTURE_GONE, Cause.NOT_ATTACHABLE])
def test_force_state_sets_only_the_state_and_says_so(cause: Cause) -> None:
    plan = make_plan(_diagnosis(cause), partial=PARTIAL, force_state=True)
    assert plan.refusal is None and plan.set_cancelled and plan.forced == PARTIAL and plan.processes == ()
    assert "although this doctor cannot read every process here (--force-state)" in plan.steps(30)[-1]


def test_the_processes_found_are_still_ended_but_the_state_is_left() -> None:
    plan = make_plan(_diagnosis(Cause.CANCEL_NOT_OBSERVED, process("sleep_main_native")), partial=PARTIAL)
    assert plan.refusal is None and plan.processes and not plan.set_cancelled
    assert plan.state_refused == PARTIAL
    assert plan.steps(30)[-1].startswith("leave the run's state as it is")


def test_a_not_attachable_run_whose_process_is_found_is_not_forced() -> None:
    plan = make_plan(
        _diagnosis(Cause.NOT_ATTACHABLE, process("sleep_main_native")), partial=PARTIAL, force_state=True
    )
    assert plan.refusal is not None and not plan.set_cancelled


@pytest.mark.parametrize(
    ("infrastructure_pid", "kind"),
    [("otherhost:4242", "process"), ("unix:///var/run/docker.sock:" + "a" * 64, "docker")],
)
def test_a_partial_view_of_this_host_weighs_only_for_runs_of_this_host(
    infrastructure_pid: str, kind: str
) -> None:
    plan = make_plan(
        _diagnosis(Cause.INFRASTRUCTURE_GONE, infrastructure_pid=infrastructure_pid, kind=kind),
        partial=PARTIAL,
    )
    assert plan.refusal is None and plan.set_cancelled and plan.forced is None


class _Api:
    def __init__(self) -> None:
        self.forced: list[str] = []

    def force_cancelled(self, run_id: str, message: str) -> Any:
        self.forced.append(message)
        return None


def test_force_state_needs_its_own_confirmation(tmp_path: Any) -> None:
    from prefect_cancel_doctor.act.resolve import ActionLog

    api, said = _Api(), list[str]()
    gone = _diagnosis(Cause.INFRASTRUCTURE_GONE)

    def resolve(confirm_force: Any) -> Any:
        return resolve_diagnosed(
            [gone],
            api,  # type: ignore[arg-type]
            confirm=lambda: True,
            force_state=True,
            confirm_force=confirm_force,
            partial=lambda: PARTIAL,
            say=said.append,
            log=ActionLog(tmp_path / "actions.jsonl"),
        )

    with pytest.raises(Declined, match="--force-state declined: nothing was done"):
        resolve(lambda plans: False)
    with pytest.raises(Declined, match="--force-state declined: nothing was done"):
        resolve(None)
    assert api.forced == []
    ((plan, outcome),) = resolve(lambda plans: [p.run_name for p in plans] == ["brave-otter"])
    assert isinstance(outcome, Outcome) and plan.forced
    assert api.forced and "--force-state, on a partial view" in api.forced[0]
    assert PARTIAL in "\n".join(said)
    assert '"set Cancelled (--force-state on a partial view)"' in (tmp_path / "actions.jsonl").read_text()


def test_a_whole_view_changes_nothing() -> None:
    plan = make_plan(_diagnosis(Cause.INFRASTRUCTURE_GONE), partial=None)
    assert plan == dataclasses.replace(make_plan(_diagnosis(Cause.INFRASTRUCTURE_GONE)))
    assert plan.set_cancelled and plan.refusal is None and plan.state_refused is None
