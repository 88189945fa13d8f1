"""Rules for a flow process that got no SIGTERM: nothing acted on the cancel (who should have, and
why it did not), and the rule that always matches."""

from __future__ import annotations

import dataclasses

from prefect_cancel_doctor.core.durations import seconds_text
from prefect_cancel_doctor.core.remedies import RUN_A_RUNNER_FIX
from prefect_cancel_doctor.diagnose.delivery import (
    control_channel,
    heartbeat_against_cancel,
    main_thread,
)
from prefect_cancel_doctor.diagnose.evidence import Evidence
from prefect_cancel_doctor.diagnose.verdicts import (
    RUNNER_GRACE_SECONDS,
    describe_thread,
    in_container,
    make_verdict,
    socket_facts,
    worker_fact,
)
from prefect_cancel_doctor.model import (
    CallKind,
    Cause,
    Delivered,
    ProcessSample,
    Resource,
    ResourceKind,
    Role,
    StateType,
    Verdict,
)
from prefect_cancel_doctor.proc.roles import is_supervisor, preparing_workspace
from prefect_cancel_doctor.sample.threads import ThreadView, thread_views


def cancel_not_observed(ev: Evidence) -> Verdict | None:
    """The process would stop on SIGTERM, so none came: nothing acted on CANCELLING."""
    engine = ev.engine
    if engine is None or ev.state_type not in (None, StateType.CANCELLING):
        return None
    main = main_thread(engine)
    if main is None:
        return None
    return _not_observed(
        ev,
        engine,
        main,
        f"{main.call.function} returns to the interpreter when a signal arrives, "
        "so a SIGTERM would have stopped this process",
    )


def _not_observed(ev: Evidence, engine: ProcessSample, main: ThreadView, why_no_sigterm: str) -> Verdict:
    """`cancel_not_observed` for a live flow process: `why_no_sigterm` says how we know none came."""
    evidence = [*ev.notes, describe_thread(main), why_no_sigterm]
    if engine.proc is not None and preparing_workspace(engine.proc.cmdline):
        return _preparing_not_observed(ev, engine, main, evidence)
    _, channel = control_channel(engine)
    if channel and channel not in why_no_sigterm:
        evidence.append(channel)
    awaited = _awaited_thread(engine, main)
    focus = awaited or main
    if awaited is not None:
        evidence.append(
            f"the event loop is idle in its selector: the flow awaits thread {awaited.name}, "
            "a thread-pool thread (what asyncio.to_thread and run_in_executor use)"
        )
        evidence.append(describe_thread(awaited))
    evidence.extend(socket_facts(ev, engine, focus))
    who, confidence = _who_should_act(ev, engine, evidence)
    no_runner_ran = who in (_NO_RUNNER_IN_CONTAINER, _NO_RUNNER_WATCHES)
    still = (
        f"it still awaits {focus.where()} in thread {focus.name}"
        if awaited
        else f"it is still in {main.where()}"
    )
    return make_verdict(
        Cause.CANCEL_NOT_OBSERVED,
        f"No SIGTERM reached the flow process {engine.pid} ({who}); {still}.",
        confidence,
        evidence,
        focus,
        first_fixes=(RUN_A_RUNNER_FIX,) if no_runner_ran else (),
    )


def _awaited_thread(engine: ProcessSample, main: ThreadView) -> ThreadView | None:
    """What an async flow whose event loop is idle waits for: a thread-pool thread in a blocking call.

    The loop's own selector wait (`epoll_wait` under `_run_once`) says nothing of the flow; the
    coroutine that awaits is suspended, so no stack shows it. `asyncio.to_thread` and
    `run_in_executor` run the work in a concurrent.futures thread (`asyncio_N` for the default
    executor): that thread's call is what the flow waits on, the user's function where it is one.
    """
    python = [f for f in main.latest.frames if not f.native]
    idle = (
        len(python) >= 2
        and python[0].function.endswith("Selector.select")
        and python[1].function.endswith("._run_once")
    )
    if not idle:
        return None
    busy = [v for v in thread_views(engine) if v.runs_pool_work and v.kind is not CallKind.OTHER]
    return next((v for v in busy if v.in_user_code), busy[0] if busy else None)


def none_came_first(
    ev: Evidence, engine: ProcessSample, main: ThreadView, why: str, later: Verdict, holder: ThreadView
) -> Verdict:
    """The process shows no SIGTERM came (`why`): `cancel_not_observed` comes first, and `later`,
    what will hold the process in `holder` once one comes, is the secondary finding."""
    first = _not_observed(ev, engine, main, why)
    described = describe_thread(holder)
    if described not in first.evidence:  # the main thread, or the thread the flow awaits, is there already
        first = dataclasses.replace(first, evidence=(*first.evidence, described))
    return dataclasses.replace(first, also=(later,))


def _preparing_not_observed(
    ev: Evidence, engine: ProcessSample, main: ThreadView, evidence: list[str]
) -> Verdict:
    """The run's process is still Prefect 3.9's workspace supervisor: no flow code has run yet.

    It runs the deployment's pull steps (git clone, pip install, scripts), then execs the
    engine in the same PID. It sets no SIGTERM handler first (POSIX), and the Runner signals
    its whole process group, so a SIGTERM would have ended it and its pull step's children.
    The Python stack shows only its event loop; what it waits for is its child process.
    """
    evidence.append(
        f"process {engine.pid} is Prefect's workspace supervisor (`python -m "
        "prefect.runner._workspace_supervisor`, Prefect 3.9+): it runs the deployment's pull steps, "
        "then execs the flow engine in the same PID; before that it has no SIGTERM handler, so a "
        "SIGTERM to its process group would have ended it"
    )
    who, confidence = _who_should_act(ev, engine, evidence)
    step = next((c for c in ev.children if c.proc is not None and c.proc.ppid == engine.pid), None)
    waits = ""
    call = main.blocking_call()
    if step is not None and step.proc is not None:
        command = " ".join(step.proc.cmdline)[:120] or step.proc.comm
        waits = f" and waits for its pull step's process {step.pid} (`{command}`)"
        evidence.append(f"the deployment's pull step runs as process {step.pid}: `{command}`")
        if call is not None:
            resource = Resource(
                ResourceKind.CHILD, f"pull step process {step.pid} ({command})", peer_pids=(step.pid,)
            )
            call = dataclasses.replace(call, kind=CallKind.SUBPROCESS, resource=resource)
    verdict = make_verdict(
        Cause.CANCEL_NOT_OBSERVED,
        f"No SIGTERM reached process {engine.pid} ({who}); the run is still preparing its "
        f"workspace (deployment pull steps, before any flow code runs){waits}.",
        confidence,
        evidence,
        main,
        extra_fixes=(
            "bound each pull step: a timeout on `run_shell_script` scripts (`timeout 600 ...`), "
            "git and pip; a step that hangs holds the run before its flow starts",
        ),
    )
    return dataclasses.replace(verdict, blocking_call=call)


#: What `_who_should_act` says where no Runner ran beside the flow (not one that ran and died).
_NO_RUNNER_IN_CONTAINER = "the container's command runs no Prefect Runner"
_NO_RUNNER_WATCHES = "no Prefect Runner watches this process"


def _who_should_act(ev: Evidence, engine: ProcessSample, evidence: list[str]) -> tuple[str, float]:
    """Name what failed to act on the cancel; append what shows it."""
    run = ev.run
    proc = engine.proc
    cmd = " ".join(proc.cmdline) if proc else ""
    if run is not None and run.cancelling_for_seconds is not None:
        evidence.append(f"the run has been Cancelling for {seconds_text(run.cancelling_for_seconds)}")
    worker_name = str(run.labels.get("prefect.worker.name", "")) if run else ""
    # Whether the worker may have been alive when the cancel came (and may have signalled the flow).
    maybe_alive_at_cancel = False
    for worker in run.workers if run else ():
        if worker.name == worker_name or not worker_name:
            evidence.append(worker_fact(worker, f"worker {worker.name}: {worker.status}"))
            order = heartbeat_against_cancel(worker, run)
            if order:
                if order[0] not in evidence:  # already there when it is why no SIGTERM came
                    evidence.append(order[0])
                maybe_alive_at_cancel = maybe_alive_at_cancel or not order[1]
    if ev.runner is not None and ev.runner.state in ("T", "t"):
        evidence.append(f"the Runner {ev.runner.pid} is stopped (state {ev.runner.state}): it cannot act")
        return "its Runner is stopped", 0.9
    container = in_container(ev)
    if container is not None and ev.runner is None:
        command = " ".join(container.command) or "?"
        evidence.append(
            f"the container's command is `{command[:160]}`: no Prefect Runner "
            "(`prefect flow-run execute`) runs in it to act on the cancel"
        )
        return _NO_RUNNER_IN_CONTAINER, 0.9
    if ev.runner is None:
        evidence.append(_runner_gone_fact(ev, engine))
        confidence = 0.9
        delivery = ev.delivery
        if maybe_alive_at_cancel and (delivery is None or delivery.sigterm is not Delivered.NO):
            # It may have sent SIGTERM before it died (within the Runner's grace window).
            confidence = 0.6
        if "prefect.engine" in cmd or "prefect" in cmd:
            return "the worker or Runner that owns the run is gone", confidence
        return _NO_RUNNER_WATCHES, min(confidence, 0.8)
    runner_cmd = " ".join(ev.runner.cmdline)[:160]
    evidence.append(f"the Runner that launched it is alive: pid {ev.runner.pid} ({runner_cmd})")
    if run is not None and (run.cancelling_for_seconds or 0) < RUNNER_GRACE_SECONDS + 5:
        return "the cancel is recent; the Runner may still be acting on it", 0.5
    evidence.append(
        "a live Runner that saw the cancel would have sent SIGTERM and, 30 s later, SIGKILL: "
        "its cancellation observer has most likely failed (its log says "
        "'Cancellation observer failed')"
    )
    return "the Runner is alive but did not act: its cancellation observer has failed", 0.8


def _runner_gone_fact(ev: Evidence, engine: ProcessSample) -> str:
    """The Runner is gone: say what the flow process's parent is now (what adopted it)."""
    proc, adopter = engine.proc, ev.adopter
    if proc is None:
        return "the Runner that launched the flow process is gone (its parent is gone)"
    if adopter is None:
        return f"the Runner that launched the flow process is gone (its parent is now PID {proc.ppid})"
    command = " ".join(adopter.cmdline)[:120] or adopter.comm
    if adopter.pid == 1 or adopter.ns_pid == 1:
        return (
            f"the Runner that launched the flow process is gone: its parent is now PID 1 (`{command}`), "
            "which adopted it when its Runner died"
        )
    if is_supervisor(adopter.comm, adopter.cmdline):
        return (
            f"the Runner that launched the flow process is gone: its parent is now process {adopter.pid} "
            f"(`{command}`), an init or supervisor, not the Runner itself (it may have started the "
            "Runner): a subreaper (PR_SET_CHILD_SUBREAPER) that adopted the flow process when its Runner died"
        )
    return (
        f"the Runner that launched the flow process is gone: its parent is now process {adopter.pid} "
        f"(`{command}`), no Prefect Runner (no worker, no `prefect flow-run execute`, and it does not "
        "listen on the flow's control-channel port): a subreaper (PR_SET_CHILD_SUBREAPER: tini -s, "
        "systemd --user, supervisord) that adopted the flow process when its Runner died"
    )


def unknown(ev: Evidence) -> Verdict | None:
    """Nothing matched: show what was seen."""
    facts = [*ev.notes]
    for process in ev.processes:
        facts.extend(process.errors)
        if not process.python and process.role is not Role.LAUNCHER:
            facts.append(f"process {process.pid} is not a Python process py-spy can read")
        facts.extend(describe_thread(v) for v in thread_views(process)[:1])
    sampled = any(process.dumps for process in ev.processes)
    summary = "No rule matched; the stacks below show what the run is doing."
    if not sampled:
        failures = [e for process in ev.processes for e in process.errors]
        summary = "No rule matched and no stack could be taken" + (
            f": {failures[0]}." if failures else " (nothing of the run was sampled)."
        )
    if ev.run is not None and ev.state_type != StateType.CANCELLING:
        running = "its processes are shown below" if ev.processes else "nothing of it runs here"
        summary = f"The run is {ev.run.state_name}, not stuck in Cancelling; {running}."
    return make_verdict(Cause.UNKNOWN, summary, 0.2, facts)
