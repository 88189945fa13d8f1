"""`resolve`: finish a stuck cancellation safely: plan, confirm, act step by step, verify, then mark.

The plan follows the verdict:

- `infrastructure_gone`, `never_started`: nothing to stop, only the state to set;
- `child_process_survives`, `orphaned_infrastructure`: end the processes left (the state
  is set only if the run is still Cancelling);
- `cancel_not_observed` and the signal causes: end the run's processes (SIGTERM, a grace
  period, SIGKILL; straight to SIGKILL where the verdict says SIGTERM cannot act);
- a running container: SIGTERM its flow engine by its host PID (a PID 1 without a handler
  would drop `docker stop`'s signal), then `docker stop` with the container's timeout, then
  `docker kill`;
- `uninterruptible_io`, `not_attachable`, `unknown`: refused, with why.

A doctor whose view of this host's processes is partial (no right to read every process:
not root, `locate.process.partial_view`) cannot tell that nothing of a run runs: a process
it cannot read may be the run's. For a run of this host's processes it then never sets the
state: the processes it can tie to the run are still ended, but the state change is refused
(exit 2), naming the processes it could not read and how to get the right, unless
`--force-state` asks for it and is confirmed on its own (a second question; with `--yes`,
the flag itself).

Each process is matched to the run when planned (its PREFECT__FLOW_RUN_ID, the container's
run label, or a served run's Runner) and re-checked right before it is signalled: same PID,
same start time. A PID reused since the plan refuses the whole plan before anything is sent.
The state is set to Cancelled only once everything the plan named is gone. Every action is
one JSON line in `$XDG_STATE_HOME/prefect-cancel-doctor/actions.jsonl`.
"""

from __future__ import annotations

import dataclasses
import functools
import getpass
import json
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from prefect_cancel_doctor.core.redact import scrub_tree
from prefect_cancel_doctor.errors import EXIT_DECLINED, DoctorError
from prefect_cancel_doctor.kinds import parse_infrastructure_pid
from prefect_cancel_doctor.kinds.base import KILL_WAIT_SECONDS, Stopper, Wait
from prefect_cancel_doctor.kinds.process.locate import is_this_host, partial_view
from prefect_cancel_doctor.kinds.registry import kind_of
from prefect_cancel_doctor.model import (
    RUN_ROLES,
    Cause,
    Diagnosis,
    FlowRunRef,
    FoundBy,
    InfraKind,
    Role,
    StateType,
    Target,
    WorkerStatus,
)
from prefect_cancel_doctor.proc import procfs

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi

#: The Runner's own grace between SIGTERM and SIGKILL.
DEFAULT_GRACE_SECONDS = 30.0

#: Why each cause that allows no action (`Cause.allows_action`) is refused.
_REFUSED = {
    Cause.NOT_ATTACHABLE: "the doctor cannot see the run's processes from here",
    Cause.UNKNOWN: "no rule explains the run, so no plan can be trusted",
    Cause.UNINTERRUPTIBLE_IO: (
        "a thread is in uninterruptible I/O (state D): not even SIGKILL acts until the I/O returns; "
        "fix the stuck mount or device first, then resolve again"
    ),
}
#: Why SIGTERM cannot act, for each cause that says so (`Cause.sigterm_useless`): SIGKILL at once.
_SIGTERM_CANNOT_ACT = {
    Cause.SIGNAL_IGNORED: "SIGTERM is ignored, or absorbed by the flow's own handler or `except`",
    Cause.SIGNAL_PENDING: "a SIGTERM is already pending and cannot run its handler",
}


class Refused(DoctorError):
    """The plan cannot be carried out safely (exit code 2)."""

    exit_code = 2


class Declined(Exception):
    """A confirmation was answered no: nothing was done. Not an error (no `DoctorError`): the
    command says so and exits `EXIT_DECLINED`."""

    exit_code = EXIT_DECLINED


@dataclass(frozen=True)
class ProcessTarget:
    """One process the plan will signal, with what ties it to the run."""

    pid: int
    start_time_ticks: int
    role: Role
    command: str
    #: Why this process is the run's ("PREFECT__FLOW_RUN_ID in its environment", ...).
    matched_by: str


@dataclass(frozen=True)
class Plan:
    """What `resolve` will do for one run, in order."""

    run_id: str
    run_name: str
    cause: Cause
    processes: tuple[ProcessTarget, ...] = ()
    #: How the run's kind stops its target as a whole (a running container), after its engine's SIGTERM.
    stopper: Stopper | None = None
    #: Why SIGTERM is skipped (None: SIGTERM first, then SIGKILL after the grace period).
    straight_to_sigkill: str | None = None
    set_cancelled: bool = False
    refusal: str | None = None
    notes: tuple[str, ...] = ()
    #: Why the state is not set although the plan would set it: the doctor's view is partial.
    state_refused: str | None = None
    #: The partial view the state is set on all the same (`--force-state`, confirmed on its own).
    forced: str | None = None

    def steps(self, grace: float) -> list[str]:
        """The plan in words, one line a step."""
        if self.refusal:
            return [f"refused: {self.refusal}"]
        lines = []
        pids = " ".join(str(p.pid) for p in self.processes)
        if self.stopper is not None:
            engine = next((p for p in self.processes if p.role is Role.ENGINE), None)
            lines += self.stopper.steps(grace, engine.pid if engine else None)
        elif self.processes and self.straight_to_sigkill:
            lines.append(f"SIGKILL {pids} ({self.straight_to_sigkill}: SIGTERM cannot act)")
        elif self.processes:
            lines.append(f"SIGTERM {pids}; wait up to {grace:.0f} s; SIGKILL whatever still runs")
        if self.processes or self.stopper is not None:
            lines.append("verify that everything above is gone")
        if self.set_cancelled and self.forced:
            lines.append(
                "set the run's state to Cancelled through the API although this doctor cannot read every "
                "process here (--force-state): a process of the run it cannot see would keep running"
            )
        elif self.set_cancelled:
            lines.append("set the run's state to Cancelled through the API (frees its concurrency slot)")
        elif self.state_refused:
            lines.append(
                "leave the run's state as it is: this doctor cannot read every process here, so it cannot "
                "tell that nothing of the run runs (--force-state sets it anyway)"
            )
        elif not self.processes and self.stopper is None:
            lines.append("nothing to do: the run is final and nothing of it runs here")
        return lines

    def lines(self, grace: float) -> list[str]:
        """The plan as printed: the run, the numbered steps with the processes listed under the first
        (the step that signals them), then the notes."""
        lines = [f"plan for run {self.run_name} ({self.run_id}), {self.cause.value}:"]
        for number, step in enumerate(self.steps(grace), 1):
            lines.append(f"  {number}. {step}")
            if number == 1 and not self.refusal:
                lines += [
                    f"     {p.pid} {p.role.value}: {p.command[:90]} (matched by {p.matched_by})"
                    for p in self.processes
                ]
        lines += [f"  note: {note}" for note in self.notes]
        if (self.forced or self.state_refused) and not self.refusal:
            lines.append(f"  note: {self.forced or self.state_refused}")
        return lines


def make_plan(diagnosis: Diagnosis, *, partial: str | None = None, force_state: bool = False) -> Plan:
    """The plan for one diagnosed run (see the module docstring).

    `partial`: why this doctor's view of this host's processes is partial (`partial_view`), or
    None when it is whole; it weighs only for a run of this host's processes. `force_state`:
    set the state on such a view all the same (`--force-state`)."""
    run, verdict, target = diagnosis.flow_run, diagnosis.verdict, diagnosis.target
    if run is None:
        raise Refused("resolve needs a flow run: use `diagnose`/`inspect` for a bare process")
    partial = partial if partial and runs_here(run, target) else None
    cancelling = run.state_type == StateType.CANCELLING
    found = target is not None and any(s.role in RUN_ROLES for s in target.processes)
    if verdict.cause is Cause.NOT_ATTACHABLE and partial and cancelling and not found:
        if force_state:
            return Plan(run.id, run.name, verdict.cause, set_cancelled=True, forced=partial)
        return Plan(run.id, run.name, verdict.cause, refusal=_state_refusal(partial), state_refused=partial)
    if not verdict.cause.allows_action:
        return Plan(run.id, run.name, verdict.cause, refusal=f"{_REFUSED[verdict.cause]} ({verdict.summary})")
    container = target.container if target else None
    stopper = kind_of(target.kind).stopper(target) if target is not None else None
    engines = stopper.engines_by_host_pid() if stopper is not None else None
    notes: list[str] = []
    if engines is not None:
        matched = "the flow engine of the run's container, by its host PID"
        processes = [
            ProcessTarget(e.pid, e.start_time_ticks, Role.ENGINE, e.command, matched) for e in engines
        ]
    else:
        roles = frozenset({Role.HOOK}) if verdict.cause is Cause.CANCELLATION_HOOK_HANG else RUN_ROLES
        processes = []
        for sample in target.processes if target else ():
            if sample.role not in roles or sample.proc is None:
                continue
            if container is not None:
                matched = f"a process of container {container.id[:12]}, whose run label is the run's"
            elif sample.proc.flow_run_id == run.id:
                matched = "PREFECT__FLOW_RUN_ID in its environment"
            elif target is not None and target.found_by == FoundBy.SERVE:
                matched = "a served run's process, found through its Runner"
            else:
                notes.append(f"process {sample.pid} is not the run's by its environment: left alone")
                continue
            command = " ".join(sample.proc.cmdline)[:120] or sample.proc.comm
            processes.append(
                ProcessTarget(sample.pid, sample.proc.start_time_ticks, sample.role, command, matched)
            )
    if verdict.cause is Cause.CANCEL_NOT_OBSERVED:
        notes += [
            f"worker {w.name} is ONLINE but did not act: its cancellation observer has given up; restart it "
            "after this (or set PREFECT_RUNNER_CRASH_ON_CANCELLATION_FAILURE=true on workers)"
            for w in run.workers
            if w.status == WorkerStatus.ONLINE and not w.heartbeat_is_stale
        ]
    plan = Plan(
        run.id,
        run.name,
        verdict.cause,
        processes=tuple(processes),
        stopper=stopper,
        straight_to_sigkill=(
            _SIGTERM_CANNOT_ACT[verdict.cause] if stopper is None and verdict.cause.sigterm_useless else None
        ),
        set_cancelled=cancelling,
        notes=tuple(notes),
    )
    if not (cancelling and partial):
        return plan
    if force_state:
        return dataclasses.replace(plan, forced=partial)
    # What it can tie to the run is still ended; the state, which says nothing of it runs, is not set.
    refusal = None if plan.processes or plan.stopper is not None else _state_refusal(partial)
    return dataclasses.replace(plan, set_cancelled=False, state_refused=partial, refusal=refusal)


def runs_here(run: FlowRunRef, target: Target | None) -> bool:
    """Whether the run is one of this host's processes, by its target and its infrastructure_pid
    (a container or a pod is told by its engine or API, not by reading /proc)."""
    if target is not None and target.kind not in (InfraKind.PROCESS, InfraKind.NONE):
        return False
    ref = parse_infrastructure_pid(run.infrastructure_pid)
    return ref.kind in (InfraKind.PROCESS, InfraKind.NONE) and is_this_host(ref.host)


def _state_refusal(partial: str) -> str:
    return (
        f"the run's state is not set to Cancelled on a partial view: {partial}; or pass --force-state to "
        "set it anyway (confirmed on its own)"
    )


@dataclass
class Outcome:
    """What `execute` did and found."""

    actions: list[str] = field(default_factory=list)
    still_running: list[str] = field(default_factory=list)
    final_state: str | None = None

    @property
    def resolved(self) -> bool:
        return not self.still_running


class ActionLog:
    """One JSON line per action: time, user, host, run, target, signal, result."""

    def __init__(self, path: Path | None = None) -> None:
        state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        self.path = path or Path(state_home) / "prefect-cancel-doctor" / "actions.jsonl"

    def record(self, run_id: str, target: str, action: str, result: str) -> None:
        entry = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "user": getpass.getuser(),
            "host": socket.gethostname(),
            "run": run_id,
            "target": target,
            "signal": action,
            "result": result,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as log:
            log.write(json.dumps(scrub_tree(entry)) + "\n")  # no secret the doctor holds (redact.py)


def _now(target: ProcessTarget) -> str:
    """ "same", "gone" or "reused": the process as it is now, against the plan."""
    proc = procfs.read_process(target.pid, read_sockets=False)
    if proc is None or proc.state == "Z":
        return "gone"
    return "same" if proc.start_time_ticks == target.start_time_ticks else "reused"


def execute(
    plan: Plan,
    api: PrefectApi,
    *,
    grace: float = DEFAULT_GRACE_SECONDS,
    say: Callable[[str], None] = print,
    wait: Wait | None = None,
    log: ActionLog | None = None,
    by: str = "resolve",
) -> Outcome:
    """Carry the plan out. `wait(what, seconds, done)` waits until `done()` or the time is up
    (a countdown on a terminal); returns `done()`. `by`: who acts, in the state's message
    ("Cancelled by prefect-cancel-doctor resolve: ...")."""
    if plan.refusal:
        raise Refused(plan.refusal)
    log = log or ActionLog()
    wait = wait or _wait_quietly
    outcome = Outcome()
    reused = [t for t in plan.processes if _now(t) == "reused"]
    if reused:
        pids = " ".join(str(t.pid) for t in reused)
        for t in reused:
            log.record(plan.run_id, f"pid {t.pid}", "none", "refused: PID reused since the plan")
        raise Refused(f"process(es) {pids} changed since the plan (PID reused): nothing was signalled")

    def send(target: ProcessTarget, sig: signal.Signals) -> None:
        state = _now(target)
        if state != "same":
            result = "already gone" if state == "gone" else "refused: PID reused"
        else:
            try:
                os.kill(target.pid, sig)
                result = "sent"
            except ProcessLookupError:
                result = "already gone"
            except PermissionError as exc:
                result = f"refused by the kernel: {exc.strerror}"
        log.record(plan.run_id, f"pid {target.pid} ({target.command[:80]})", sig.name, result)
        outcome.actions.append(f"{sig.name} → {target.pid}: {result}")
        say(f"  {sig.name} {target.pid} ({target.role.value}): {result}")

    def alive() -> list[ProcessTarget]:
        return [t for t in plan.processes if _now(t) == "same"]

    if plan.stopper is not None:
        for target in plan.processes:
            if target.role is Role.ENGINE:
                send(target, signal.SIGTERM)

        stopper = plan.stopper

        def record(step: str) -> None:
            log.record(plan.run_id, stopper.what, step, "done")
            outcome.actions.append(f"{step} {stopper.name}")
            say(f"  {step} {stopper.name}: done")

        if stopper.stop(grace, wait, record, engine_signalled=bool(plan.processes)):
            outcome.still_running.append(stopper.what)
    elif plan.processes:
        first = signal.SIGKILL if plan.straight_to_sigkill else signal.SIGTERM
        for target in plan.processes:
            send(target, first)
        if first is signal.SIGTERM and alive():
            wait(f"waiting for {len(alive())} process(es) to exit", grace, lambda: not alive())
            for target in alive():
                send(target, signal.SIGKILL)
        wait("waiting for the killed processes to go", KILL_WAIT_SECONDS, lambda: not alive())
    outcome.still_running += [f"process {t.pid} ({t.command[:80]})" for t in alive()]
    if outcome.still_running:
        say("still running: " + ", ".join(outcome.still_running) + "; the state is left as it is")
        return outcome
    if plan.processes or plan.stopper is not None:
        say(f"  verified: {_gone(plan)}")
    if plan.set_cancelled:
        done = "; ".join(outcome.actions) or "nothing was left to stop"
        how = " --force-state, on a partial view of the host's processes" if plan.forced else ""
        message = f"Cancelled by prefect-cancel-doctor {by}{how}: {done}"[:500]
        state = api.force_cancelled(plan.run_id, message)
        outcome.final_state = state.type.value if state else None
        action = "set Cancelled" + (" (--force-state on a partial view)" if plan.forced else "")
        log.record(plan.run_id, "flow run state", action, outcome.final_state or "?")
        say(f"  run {plan.run_name}: state set to {outcome.final_state}")
    elif plan.state_refused:
        log.record(plan.run_id, "flow run state", "none", "refused: partial view of the host's processes")
        say(f"  run {plan.run_name}: state left as it is (partial view)")
    return outcome


def _gone(plan: Plan) -> str:
    """What the verification found, in words: "process 14482 gone", "container 3f2a… stopped"."""
    pids = [str(t.pid) for t in plan.processes]
    found = [f"process{'es' if len(pids) > 1 else ''} {' '.join(pids)} gone"] if pids else []
    if plan.stopper is not None:
        found.append(f"{plan.stopper.what} stopped")
    return "; ".join(found)


def resolve_diagnosed(
    diagnoses: list[Diagnosis],
    api: PrefectApi,
    *,
    confirm: Callable[[], bool],
    dry_run: bool = False,
    grace: float = DEFAULT_GRACE_SECONDS,
    say: Callable[[str], None] = print,
    show: Callable[[str], None] | None = None,
    wait: Wait | None = None,
    log: ActionLog | None = None,
    force_state: bool = False,
    confirm_force: Callable[[list[Plan]], bool] | None = None,
    partial: Callable[[], str | None] = partial_view,
) -> list[tuple[Plan, Outcome | None]]:
    """Plan every run, print the plans with `show` (the command's output; default `say`), and
    (unless `dry_run`) act once `confirm()` says yes, saying what it does with `say`.

    A refused plan raises `Refused` before anything is done for any run. `confirm()` answering
    no raises `Declined`, nothing done; so does `confirm_force(plans)` answering no for plans that
    set a state on a partial view (`force_state`; no `confirm_force`: no). A state left as it was
    on a partial view raises `Refused` once the rest is done (exit 2). `partial()`: why this
    doctor's view of the host's processes is partial (read once, and only if a run lives in them).
    """
    show = show or say
    view = functools.cache(partial)
    plans = [make_plan(d, partial=view() if _here(d) else None, force_state=force_state) for d in diagnoses]
    for plan in plans:
        for line in plan.lines(grace):
            show(line)
    refused = [p for p in plans if p.refusal]
    if refused:
        raise Refused("; ".join(f"run {p.run_name}: {p.refusal}" for p in refused))
    if dry_run:
        say("dry run: nothing was done")
        return [(plan, None) for plan in plans]
    if not confirm():
        raise Declined("declined: nothing was done")
    forced = [p for p in plans if p.forced]
    if forced and not (confirm_force and confirm_force(forced)):
        raise Declined("--force-state declined: nothing was done")
    log = log or ActionLog()
    results: list[tuple[Plan, Outcome | None]] = []
    for plan in plans:
        say(f"resolving run {plan.run_name}:")
        results.append((plan, execute(plan, api, grace=grace, say=say, wait=wait, log=log)))
    say(f"actions logged to {log.path}")
    left = [p for p, outcome in results if p.state_refused and outcome is not None and outcome.resolved]
    if left:
        raise Refused("; ".join(f"run {p.run_name}: {_state_refusal(p.state_refused or '')}" for p in left))
    return results


def _here(diagnosis: Diagnosis) -> bool:
    run = diagnosis.flow_run
    return run is not None and run.state_type == StateType.CANCELLING and runs_here(run, diagnosis.target)


def _wait_quietly(what: str, seconds: float, done: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        time.sleep(0.2)
    return done()


__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "ActionLog",
    "Declined",
    "Outcome",
    "Plan",
    "ProcessTarget",
    "Refused",
    "execute",
    "make_plan",
    "resolve_diagnosed",
]
