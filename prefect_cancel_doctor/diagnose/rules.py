"""Ordered, pure rules: what was read about a run → the verdict.

The first rule that matches wins. For a live flow process the question the
rules answer is: *what would keep this process from ending when it gets
SIGTERM?* If nothing would (its main thread sits in a call that a signal
interrupts), then no SIGTERM reached it: nothing acted on CANCELLING.
"""

from __future__ import annotations

import dataclasses
import re
import signal
from collections.abc import Callable

from prefect_cancel_doctor.core.durations import seconds_text
from prefect_cancel_doctor.core.remedies import GROUP_SIGNAL_FIX, remediation, short_fix, stop_line
from prefect_cancel_doctor.diagnose.delivery import (
    control_channel,
    gil_holder,
    heartbeat_against_cancel,
    main_thread,
)
from prefect_cancel_doctor.diagnose.evidence import Evidence
from prefect_cancel_doctor.kinds import parse_infrastructure_pid
from prefect_cancel_doctor.kinds.base import ContainerView
from prefect_cancel_doctor.kinds.registry import kind_of
from prefect_cancel_doctor.model import (
    DEFAULT_HEARTBEAT_SECONDS,
    FINAL_STATES,
    CallKind,
    Cause,
    Delivered,
    Delivery,
    FlowRunRef,
    FoundBy,
    HandlerKind,
    ProcessSample,
    Resource,
    ResourceKind,
    Role,
    StateType,
    Verdict,
    WorkerInfo,
    WorkerStatus,
)
from prefect_cancel_doctor.proc.roles import is_supervisor, preparing_workspace, worker_options
from prefect_cancel_doctor.sample.classify import db_port_name
from prefect_cancel_doctor.sample.threads import ThreadView, thread_views

SIGTERM = int(signal.SIGTERM)
RUNNER_GRACE_SECONDS = 30.0


Rule = Callable[[Evidence], Verdict | None]


def _has(mask: int, signum: int) -> bool:
    return bool(mask >> (signum - 1) & 1)


def _verdict(
    cause: Cause,
    summary: str,
    confidence: float,
    evidence: list[str],
    view: ThreadView | None = None,
    extra_fixes: tuple[str, ...] = (),
) -> Verdict:
    call = view.blocking_call() if view else None
    if view is not None and not view.stable:
        evidence.append(
            f"the {view.name or 'thread'} thread moved between samples: work in progress, "
            f"not one blocking call (last seen in {view.where()})"
        )
        confidence = min(confidence, 0.6)
    return Verdict(
        cause=cause,
        summary=summary,
        confidence=round(confidence, 2),
        blocking_call=call,
        evidence=tuple(evidence),
        remediation=remediation(cause, call) + extra_fixes,
        short_fix=short_fix(cause, call),
    )


def _describe(view: ThreadView) -> str:
    kernel = view.kernel
    facts = [f"{view.name or 'thread'} (tid {view.native_id})"]
    if kernel is not None:
        facts.append(f"state {kernel.state}")
        if kernel.wchan:
            facts.append(f"wchan {kernel.wchan}")
        if kernel.syscall_name:
            facts.append(f"syscall {kernel.syscall_name}")
    if view.call.native:
        facts.append(f"native frame {view.call.native}")
    facts.append(f"in {view.where()}")
    stable = "stable across" if view.stable else "moving between"
    facts.append(f"({stable} {len(view.calls)} samples)")
    return " ".join(facts)


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def mark_cancelled_command(run_id: str, what: str) -> str | None:
    """A one-line command forcing the run to Cancelled with Prefect's own client (the same
    settings as the `prefect` CLI: profile, PREFECT_API_URL, PREFECT_API_KEY). Prefect's CLI
    has no such command; None for an id that is not a UUID (never put in a shell line)."""
    if not _UUID.fullmatch(run_id):
        return None
    message = f"Cancelled by hand after prefect-cancel-doctor: {what}"
    return (
        'python -c "from prefect import get_client; from prefect.states import Cancelled; '
        "c = get_client(sync_client=True).__enter__(); "
        f"c.set_flow_run_state('{run_id}', Cancelled(message='{message}'), force=True)\""
    )


def stop_commands(ev: Evidence, cause: Cause) -> tuple[str, ...]:
    """What ends the run now, as shell commands to run in order on this host."""
    if not cause.allows_action:
        return ()
    run = ev.run
    commands: list[str] = []
    done = "nothing was left to stop"
    targets = ev.hooks if cause is Cause.CANCELLATION_HOOK_HANG else ev.processes
    whole = kind_of(ev.target.kind).stop_now(ev.target, cause) if ev.target is not None else None
    if whole is not None:  # the kind stops its target as a whole (a container, a Job)
        commands += whole.commands
        done = whole.done
    elif targets:
        pids = " ".join(str(p.pid) for p in targets)
        if cause.sigterm_useless:
            commands.append(f"kill -KILL {pids}")
        else:
            commands.append(f"kill -TERM {pids}; sleep 5; kill -KILL {pids} 2>/dev/null; true")
        done = f"process(es) {pids} killed"
    if run is not None and run.state_type == StateType.CANCELLING:
        mark = mark_cancelled_command(run.id, done)
        if mark:
            commands.append(mark)
    return tuple(commands)


def _socket_facts(ev: Evidence, process: ProcessSample, view: ThreadView | None) -> list[str]:
    """The TCP peers (other than the Prefect API) of a process blocked in network or database I/O."""
    if process.proc is None or view is None:
        return []
    if view.call.kind not in (CallKind.NETWORK_IO, CallKind.DATABASE):
        return []
    facts = []
    for sock in process.proc.sockets:
        if sock.state != "ESTABLISHED" or sock.remote == ev.api_peer:
            continue
        port = int(sock.remote.rsplit(":", 1)[-1])
        name = db_port_name(port)
        facts.append(f"fd {sock.fd}: TCP connection to {sock.remote}" + (f" ({name})" if name else ""))
    return facts


# -- rules, in order ------------------------------------------------------------


def not_attachable(ev: Evidence) -> Verdict | None:
    """The target exists (or may) but cannot be read from here."""
    if ev.unreachable is None:
        return None
    return _verdict(Cause.NOT_ATTACHABLE, ev.unreachable, 0.9, [*ev.notes, ev.unreachable])


def never_started(ev: Evidence) -> Verdict | None:
    """CANCELLING with no start time and no infrastructure: only a worker can finish it."""
    run = ev.run
    if run is None or run.state_type != StateType.CANCELLING or run.start_time or run.infrastructure_pid:
        return None
    if ev.processes:
        return None
    evidence = [*ev.notes, "the run has no start_time and no infrastructure_pid"]
    pool = run.work_pool_name
    online = [w for w in run.workers if w.status == WorkerStatus.ONLINE]
    for worker in run.workers:
        beat = worker.seconds_since_heartbeat
        evidence.append(
            f"worker {worker.name} of pool {pool}: {worker.status}"
            + (f", last heartbeat {seconds_text(beat)} ago" if beat is not None else "")
        )
    if pool is None:
        evidence.append("the run has no work pool: no worker submitted it")
    elif not run.workers:
        evidence.append(f"no worker is registered in pool {pool}")
    claimed = str(run.labels.get("prefect.worker.name", "")) or "the worker that claimed it"
    who = f"{claimed} is gone or stalled, and no other worker finishes a cancel it did not submit" + (
        " (its pool's other workers are online, and will not act)" if online else ""
    )
    return _verdict(
        Cause.NEVER_STARTED,
        f"A worker claimed the run but its infrastructure never started; {who}.",
        0.85,
        evidence,
    )


def orphaned(ev: Evidence) -> Verdict | None:
    """A final-state run whose flow process (or only its children) still runs."""
    if ev.state_type not in FINAL_STATES or not ev.processes:
        return None
    message = ev.run.state_message if ev.run else None
    evidence = [
        *ev.notes,
        f"the run is {ev.run.state_name if ev.run else '?'}" + (f": {message!r}" if message else ""),
    ]
    engine = ev.engine
    if engine is None:
        return _children_survive(ev, evidence)
    view = main_thread(engine)
    evidence.append(f"flow process {engine.pid} still runs")
    if view is not None:
        evidence.append(_describe(view))
    evidence.extend(_socket_facts(ev, engine, view))
    timed_out = bool(message and "timed out" in message)
    why = " after the server's cancellation timeout" if timed_out else ""
    return _verdict(
        Cause.ORPHANED_INFRASTRUCTURE,
        f"The run was marked {ev.run.state_name if ev.run else 'final'}{why} but its process "
        f"{engine.pid} still runs" + (f", in {view.where()}." if view else "."),
        0.95,
        evidence,
        view,
    )


def infrastructure_gone(ev: Evidence) -> Verdict | None:
    """CANCELLING, but nothing of the run runs any more — here, at least."""
    run = ev.run
    if ev.state_type != StateType.CANCELLING or ev.processes or run is None:
        return None
    if not (run.start_time or run.infrastructure_pid):
        return None
    gone = kind_of(ev.target.kind).gone(ev.target, ev.notes) if ev.target is not None else None
    if gone is not None:  # only the kind can say why (an exited container, a deleted Job)
        return gone
    evidence = [*ev.notes, "no process on this host carries this run's PREFECT__FLOW_RUN_ID"]
    if not run.infrastructure_pid:
        evidence.append("the run has no infrastructure_pid: no worker or Runner recorded where it runs")
        return _verdict(
            Cause.NOT_ATTACHABLE,
            "The run started without recording where it runs (no infrastructure_pid; e.g. a flow "
            "called directly, not from a deployment) and no process here carries its id.",
            0.5,
            evidence,
            extra_fixes=("find its process on the host that started it and run `inspect --pid PID` there",),
        )
    worker_name = str(run.labels.get("prefect.worker.name", ""))
    worker = next((w for w in run.workers if w.name == worker_name), None)
    alive = worker is not None and worker.status == WorkerStatus.ONLINE and not worker.heartbeat_is_stale
    if worker is not None:
        evidence.append(_worker_fact(worker, f"its worker {worker.name} is {worker.status}"))
    if ev.runners:
        evidence.append(
            f"a worker of pool {run.work_pool_name} runs on this host, and the run's process is not here"
        )
    if alive and ev.launched_here and not ev.runners:
        assert worker is not None
        evidence.append(
            f"no worker of pool {run.work_pool_name} runs on this host any more: the worker that launched "
            f"the run here is gone; the API says {worker.status} only until it misses three heartbeats"
        )
    elif alive and not ev.runners:
        assert worker is not None
        evidence.append(
            f"no worker of pool {run.work_pool_name} runs on this host: the run most likely lives on "
            f"the host of worker {worker.name}, whose heartbeat is fresh"
        )
        return _verdict(
            Cause.NOT_ATTACHABLE,
            f"The run's process is not on this host; its worker {worker.name} is alive elsewhere "
            "(fresh heartbeat).",
            0.6,
            evidence,
            extra_fixes=(f"run the doctor on the host of worker {worker.name}",),
        )
    if worker is not None and worker.status == WorkerStatus.ONLINE:
        evidence.append(
            f"the API still says ONLINE until three heartbeats are missed, but {worker.name} has missed "
            "at least one: it has most likely died, and its run's process with it"
        )
    return _verdict(
        Cause.INFRASTRUCTURE_GONE,
        "The run's process is gone; only its API state is stuck in Cancelling "
        "(nothing is left to report Cancelled).",
        0.9 if ev.runners or (worker is not None and not alive) else 0.85 if ev.launched_here else 0.7,
        evidence,
    )


def _worker_fact(worker: WorkerInfo, fact: str) -> str:
    """`fact` (the worker's status) with its heartbeat, against its interval."""
    beat, interval = worker.seconds_since_heartbeat, worker.heartbeat_interval_seconds
    if beat is not None:
        every = seconds_text(interval or DEFAULT_HEARTBEAT_SECONDS)
        fact += f", last heartbeat {seconds_text(beat)} ago (every {every}"
        fact += ": stale)" if worker.heartbeat_is_stale else ": fresh)"
    return fact


def pid1_no_forward(ev: Evidence) -> Verdict | None:
    """A container's PID 1 is a shell or wrapper without a SIGTERM handler: the kernel drops SIGTERM."""
    pid1 = ev.pid1
    container = _in_container(ev)
    if pid1 is None or pid1.proc is None or container is None or container.has_init:
        return None
    if _has(pid1.proc.sig_caught, SIGTERM) or ev.engine is None:
        return None
    command = " ".join(pid1.proc.cmdline) or " ".join(container.pid1_command) or pid1.proc.comm
    main = main_thread(ev.engine)
    owner, stopper = container.name, container.stopped_by
    evidence = [
        *ev.notes,
        f"PID 1 of {owner} is `{command[:160]}` (SigCgt={pid1.proc.sig_caught:016x}: no SIGTERM handler)",
        f"the kernel drops signals that PID 1 of a namespace does not handle, so {stopper} and "
        "the worker's teardown SIGTERM never reach the flow process below it",
        f"flow process: pid {ev.engine.pid} below PID 1",
    ]
    if main is not None:
        evidence.append(_describe(main))
    return _verdict(
        Cause.PID1_NO_FORWARD,
        f"PID 1 of the container is `{command[:60]}`, which does not forward SIGTERM to the flow "
        "process" + (f" (still in {main.where()})." if main else "."),
        0.9,
        evidence,
        main,
    )


def _in_container(ev: Evidence) -> ContainerView | None:
    return kind_of(ev.target.kind).in_container(ev.target) if ev.target is not None else None


def cancellation_hook_hang(ev: Evidence) -> Verdict | None:
    """The flow process is gone and the Runner is stuck in an on_cancellation hook.

    Prefect 3.9 runs hooks in a subprocess of the Runner (role "hook"); older
    versions in a thread of the Runner itself (a local worker in user code).
    """
    if ev.state_type != StateType.CANCELLING or ev.engine is not None:
        return None
    # A sync hook runs in a thread of its own: prefer the thread in user code.
    runners = [p for p in ev.runners if _may_have_run(p, ev.run)]
    candidates = [(p, v) for p in (*ev.hooks, *runners) for v in thread_views(p) if _in_hook(v)]
    candidates += [(p, v) for p in ev.hooks for v in thread_views(p)[:1]]
    if not candidates:
        return None
    process, view = candidates[0]
    cmd = " ".join(process.proc.cmdline)[:140] if process.proc else "?"
    where = "hook subprocess" if process.role == Role.HOOK else "Runner"
    return _verdict(
        Cause.CANCELLATION_HOOK_HANG,
        f"The flow process is gone, but its on_cancellation hook hangs in {view.where()} "
        f"({where} pid {process.pid}); Cancelled is proposed only after the hooks return.",
        0.9 if view.stable else 0.6,
        [
            *ev.notes,
            f"{where} {process.pid}: {cmd}",
            _describe(view),
            "the Runner runs on_cancellation hooks after the flow process has exited and "
            "proposes Cancelled only when they return",
        ],
        view,
    )


def _may_have_run(runner: ProcessSample, run: FlowRunRef | None) -> bool:
    """Whether this local worker of the pool can be the one that ran the run (and runs its hooks).

    Only that worker runs a run's hooks; another of the pool (a standby, one started since)
    that is in code of its own (a start-up script, a sitecustomize) is no hook hang. Worker
    names tell them apart where both are known (`--name` on its command line, the run's
    `prefect.worker.name` label)."""
    ran = str(run.labels.get("prefect.worker.name") or "") if run else ""
    options = worker_options(list(runner.proc.cmdline)) if runner.proc else None
    name = (options or {}).get("name")
    return not ran or not name or name == ran


def _in_hook(view: ThreadView) -> bool:
    """A Runner thread in user code: Runners execute no user code but hooks."""
    frame = view.call.user_frame
    return frame is not None and frame.function != "<module>"


def children_survive(ev: Evidence) -> Verdict | None:
    """The flow process is gone but processes it started still run."""
    if ev.engine is not None or not ev.children:
        return None
    return _children_survive(ev, list(ev.notes))


def _children_survive(ev: Evidence, evidence: list[str]) -> Verdict:
    children = ev.children
    pids = " ".join(str(c.pid) for c in children)
    served = ev.target is not None and ev.target.found_by == FoundBy.SERVE
    for child in children:
        cmd = " ".join(child.proc.cmdline)[:120] if child.proc else "?"
        evidence.append(
            f"process {child.pid} ({cmd}) "
            + (
                "carries the served deployment's PREFECT__DEPLOYMENT_NAME, sits in its Runner's process "
                "group and started while the run ran"
                if served
                else "carries the run's PREFECT__FLOW_RUN_ID"
            )
        )
        if child.proc and child.proc.ppid == 1:
            evidence.append(f"process {child.pid} was re-parented to PID 1: its parent is gone")
    signalled_alone = served or _stayed_in_flow_group(ev)
    fixes: tuple[str, ...] = ()
    if served:
        evidence.append(
            "flow.serve()'s Runner signals the flow process alone, not its process group (Prefect 3.9 "
            "runner/_process_manager.py, _SingleProcessTerminationScope): whatever the flow starts "
            "outlives every cancel"
        )
        fixes = (
            "or run the deployment on a process work pool: since Prefect 3.9 its worker signals the "
            "flow's whole process group",
        )
    elif signalled_alone:
        evidence.append(
            "the survivors are still in the flow process's group, so the cancel signalled the flow's PID "
            "alone, not its group: a deployment `command`, or Prefect before 3.9"
        )
    view = next((v for c in children for v in thread_views(c)[:1]), None)
    verdict = _verdict(
        Cause.CHILD_PROCESS_SURVIVES,
        f"The flow process is gone but {len(children)} process(es) it started still run "
        f"(pid {pids}): the cancel signalled the flow, not its children.",
        0.9,
        evidence,
        view,
        extra_fixes=fixes,
    )
    if not signalled_alone:
        return verdict
    # A group SIGTERM never came, so keeping children in the group would not help.
    return dataclasses.replace(
        verdict, remediation=tuple(f for f in verdict.remediation if f != GROUP_SIGNAL_FIX)
    )


def _stayed_in_flow_group(ev: Evidence) -> bool:
    """Whether the survivors are still in the (dead) flow process's group, its PID as recorded."""
    ref = parse_infrastructure_pid(ev.run.infrastructure_pid) if ev.run else None
    if ref is None or ref.pid is None:
        return False
    return all(c.proc is not None and c.proc.pgid == ref.pid for c in ev.children)


def uninterruptible(ev: Evidence) -> Verdict | None:
    """A thread in state D: not even SIGKILL acts until the I/O returns."""
    for process in ev.processes:
        for view in thread_views(process):
            if view.kernel is not None and view.kernel.state == "D":
                return _verdict(
                    Cause.UNINTERRUPTIBLE_IO,
                    f"Thread {view.name or view.native_id} of process {process.pid} is in "
                    "uninterruptible I/O (state D); no signal acts until it returns.",
                    0.85,
                    [*ev.notes, _describe(view)],
                    view,
                )
    return None


def signal_ignored(ev: Evidence) -> Verdict | None:
    """SIGTERM is ignored or blocked by the flow process, or caught by a handler of its own that returns."""
    engine = ev.engine
    if engine is None or engine.proc is None:
        return None
    proc = engine.proc
    main = main_thread(engine)
    main_kernel = main.kernel if main else None
    handler = engine.sigterm_handler
    own_handler = handler is not None and handler.kind is HandlerKind.OTHER
    if _has(proc.sig_ignored, SIGTERM):
        how = "ignored (SIG_IGN)"
    elif main_kernel is not None and _has(main_kernel.sig_blocked, SIGTERM):
        how = "blocked in the main thread's signal mask"
    elif own_handler and handler is not None:
        how = f"caught by a handler of the flow's own, {handler.where()}, in place of Prefect's"
    else:
        return None
    evidence = [*ev.notes, f"/proc/{proc.pid}/status: SIGTERM is {how} (SigIgn={proc.sig_ignored:016x})"]
    if own_handler:
        evidence[-1] = (
            "the interpreter's SIGTERM handler (read from its memory) is "
            f"{handler.where() if handler else '?'}, "
            "not Prefect's: a SIGTERM runs it instead of raising TerminationSignal, and the flow goes on "
            "when it returns"
        )
    if _has(proc.sig_pending, SIGTERM) or _has(proc.shared_pending, SIGTERM):
        evidence.append("a SIGTERM is pending in the kernel")
    if main is not None:
        evidence.append(_describe(main))
    delivery = ev.delivery
    came = delivery is not None and delivery.sigterm is Delivered.YES
    summary = f"The flow process {proc.pid} has SIGTERM {how}, so the cancel cannot stop it" + (
        f"; it sits in {main.where()}." if main else "."
    )
    if own_handler and came:
        summary = (
            f"A SIGTERM came and the flow's own handler {handler.where() if handler else '?'} "
            "returned, so the "
            f"flow process {proc.pid} went on" + (f"; it sits in {main.where()}." if main else ".")
        )
    ignored = _verdict(
        Cause.SIGNAL_IGNORED,
        summary,
        0.95 if not own_handler or came else 0.85,
        evidence,
        main,
    )
    if own_handler:
        ignored = dataclasses.replace(
            ignored,
            remediation=_HANDLER_FIXES,
            short_fix="end the run in its SIGTERM handler",
        )
    if not own_handler or came or delivery is None or delivery.sigterm is not Delivered.NO or main is None:
        return ignored
    # The handler would absorb a SIGTERM, but the signs say none came yet: that comes first.
    later = dataclasses.replace(
        ignored,
        summary=f"Once a SIGTERM comes, the flow's own handler {handler.where() if handler else '?'} will "
        "catch it and return: the flow goes on.",
    )
    return _none_came_first(ev, engine, main, delivery.signs_against[0], later, main)


#: What fixes a SIGTERM handler of the flow's own that returns.
_HANDLER_FIXES = (
    "do not replace Prefect's SIGTERM handler in a flow; put cleanup in an on_cancellation hook or a "
    "finally block, or make the handler end the run (raise SystemExit, or call the handler "
    "signal.signal returned)",
)


def exception_swallowed(ev: Evidence) -> Verdict | None:
    """Prefect's handler raises `TerminationSignal` in the flow; an `except` of the flow catches it
    without re-raising, and the flow goes on (often to the next item of a loop)."""
    engine = ev.engine
    main = main_thread(engine) if engine else None
    if engine is None or main is None or not engine.swallowing or not main.call.interruptible:
        return None
    handler = engine.sigterm_handler
    if handler is not None and handler.kind is not HandlerKind.PREFECT:
        return None
    clause = engine.swallowing[0]
    place = f"{clause.filename}:{clause.line}"
    catches = "everything (a bare `except:`)" if clause.catches == "except:" else clause.catches
    goes_on = (
        f"and the loop at line {clause.loop_line} goes on to its next item"
        if clause.loop_line
        else "and the flow goes on after it"
    )
    evidence = [
        *ev.notes,
        _describe(main),
        f"the main thread's line {clause.frame_line} in {clause.function} is inside a `try` whose "
        f"`{clause.code or 'except'}` ({place}) catches {catches} and does not re-raise: Prefect's "
        f"SIGTERM handler raises TerminationSignal (a BaseException) there, the clause catches it {goes_on}",
    ]
    if handler is not None:
        evidence.append(
            f"the interpreter's SIGTERM handler (read from its memory) is Prefect's: {handler.where()}"
        )
    delivery = ev.delivery
    came = delivery is not None and delivery.sigterm is Delivered.YES
    summary = (
        f"A SIGTERM came, and the `except` at {place} caught Prefect's TerminationSignal {goes_on}; "
        f"it now sits in {main.where()}."
        if came
        else f"A SIGTERM here raises TerminationSignal, which the `except` at {place} catches {goes_on}; "
        f"it sits in {main.where()}."
    )
    swallowed = _verdict(
        Cause.SIGNAL_IGNORED,
        summary,
        0.9 if came else 0.7,
        evidence,
        main,
    )
    swallowed = dataclasses.replace(
        swallowed,
        remediation=(
            f"at {place}: catch Exception, not {catches} (TerminationSignal is a BaseException so that "
            "flows do not catch it), or re-raise prefect.exceptions.TerminationSignal first",
        ),
        short_fix="catch Exception, not BaseException",
    )
    if came or delivery is None or delivery.sigterm is not Delivered.NO:
        return swallowed
    later = dataclasses.replace(
        swallowed,
        summary=f"Once a SIGTERM comes, the `except` at {place} will catch Prefect's TerminationSignal "
        f"{goes_on}.",
    )
    return _none_came_first(ev, engine, main, delivery.signs_against[0], later, main)


def absorbed_unseen(ev: Evidence) -> Verdict | None:
    """A SIGTERM came (a sign says so) to a flow process whose main thread waits in a call a signal
    interrupts, and it lives on: its own code absorbed it, but the handler could not be read here
    (an interpreter this doctor cannot read, a sidecar whose probe could not run)."""
    engine, delivery = ev.engine, ev.delivery
    main = main_thread(engine) if engine else None
    if (
        engine is None
        or main is None
        or delivery is None
        or delivery.sigterm is not Delivered.YES
        or delivery.absorbed_by is not None
        or engine.sigterm_handler is not None
        or not main.call.interruptible
        or ev.state_type not in (None, StateType.CANCELLING)
    ):
        return None
    evidence = [
        *ev.notes,
        _describe(main),
        *(f"a sign that a SIGTERM came: {sign}" for sign in delivery.signs_for),
        f"{main.call.function} returns to the interpreter when a signal arrives, and Prefect's handler "
        "would have ended the flow: a handler of the flow's own, or an `except` around the call, "
        "absorbed it",
        *(f"not read here: {what}" for what in delivery.unread),
    ]
    absorbed = _verdict(
        Cause.SIGNAL_IGNORED,
        f"A SIGTERM came and the flow process {engine.pid} went on; it sits in {main.where()}. What "
        "absorbed it (a SIGTERM handler of the flow's own, or an `except` that catches "
        "BaseException) could not be read here.",
        0.6,
        evidence,
        main,
    )
    return dataclasses.replace(
        absorbed,
        remediation=(
            *_HANDLER_FIXES,
            "an `except BaseException` (or a bare `except:`) around the blocking call catches Prefect's "
            "TerminationSignal: catch Exception instead, or re-raise prefect.exceptions.TerminationSignal",
        ),
        short_fix="end the run on SIGTERM",
    )


def handler_starved(ev: Evidence) -> Verdict | None:
    """A SIGTERM came, but another thread holds the GIL in a C loop: the main thread cannot take
    it to run Prefect's handler (CPython runs Python signal handlers in the main thread only)."""
    engine = ev.engine
    main = main_thread(engine) if engine else None
    if engine is None or main is None or engine.sigterm_pending is not True:
        return None
    holder = gil_holder(engine)
    if holder is None:
        return None
    evidence = [
        *ev.notes,
        _describe(holder),
        f"{holder.name or 'the thread'} held the GIL in every sample ({len(engine.dumps)}); the main thread "
        "in none",
        "the interpreter holds a SIGTERM it has not handled (CPython's Handlers[SIGTERM].tripped = 1, read "
        "from the process's memory): the C handler ran, and the Python handler waits for the main thread "
        "to take the GIL",
        _describe(main),
    ]
    return _verdict(
        Cause.SIGNAL_PENDING,
        f"A SIGTERM came, but thread {holder.name} holds the GIL in {holder.where()} (a C call that never "
        "releases it), so the main thread cannot run Prefect's handler.",
        0.9 if holder.stable else 0.7,
        evidence,
        holder,
        extra_fixes=(
            "bound the call that holds the GIL (a regular expression with catastrophic backtracking, a C "
            "extension loop): fix the pattern or input, or run it in a subprocess that can be killed",
        ),
    )


def exit_blocked_by_thread(ev: Evidence) -> Verdict | None:
    """The main thread has unwound (or would) but a non-daemon thread keeps the process alive."""
    engine = ev.engine
    if engine is None:
        return None
    views = thread_views(engine)
    main = views[0] if views and views[0].is_main else None
    others = [
        v
        for v in views
        if not v.is_main and (v.in_user_code or v.runs_pool_work) and not v.call.on_event_loop
    ]
    if not others:
        return None
    holder = next((v for v in others if v.is_pool_worker), others[0])
    evidence = [*ev.notes, _describe(holder)]
    if main is None or main.in_shutdown:
        evidence.append(
            "the main thread has left the flow and waits for the thread in "
            + " ← ".join(f.function for f in main.latest.frames[:3])
            if main
            else "the main thread is gone"
        )
        if holder.is_pool_worker:
            evidence.append(f"{holder.name} is a thread-pool (task runner) thread: never a daemon")
        return _verdict(
            Cause.EXIT_BLOCKED_BY_THREAD,
            f"The flow has unwound but thread {holder.name} still runs {holder.where()}, "
            "so the process cannot exit.",
            0.95,
            evidence,
            holder,
        )
    if not (main.call.interruptible and (holder.is_pool_worker or main.call.kind is CallKind.LOCK)):
        return None
    evidence.append(_describe(main))
    evidence.append(
        "a SIGTERM would unwind the main thread, then the interpreter joins this "
        + ("thread-pool thread (never a daemon)" if holder.is_pool_worker else "non-daemon thread")
    )
    blocked = _verdict(
        Cause.EXIT_BLOCKED_BY_THREAD,
        f"Thread {holder.name} is blocked in {holder.where()}; it keeps the process alive "
        "after the main thread unwinds.",
        0.8 if holder.is_pool_worker else 0.6,
        evidence,
        holder,
    )
    if ev.state_type != StateType.CANCELLING:
        return blocked
    # Cancelling, yet the main thread is still in the flow, in a call a signal interrupts:
    # no SIGTERM came. That is the first cause; the thread only matters once one comes.
    later = dataclasses.replace(
        blocked,
        summary=f"Once a SIGTERM comes, thread {holder.name} ({holder.where()}) will keep the "
        "process alive after the main thread unwinds.",
    )
    why = (
        f"{main.call.function} returns to the interpreter when a signal arrives, so a SIGTERM "
        "would have unwound the main thread"
    )
    return _none_came_first(ev, engine, main, why, later, holder)


def event_loop_blocked(ev: Evidence) -> Verdict | None:
    """An async flow's event loop thread is stuck in a synchronous call."""
    engine = ev.engine
    if engine is None:
        return None
    for view in thread_views(engine):
        call = view.call
        if call.on_event_loop and call.user_frame is not None and call.kind is not CallKind.OTHER:
            return _verdict(
                Cause.EVENT_LOOP_BLOCKED,
                f"The async flow's event loop is blocked in {view.where()}: a synchronous call "
                "on the loop, so no await point is reached.",
                0.9 if view.stable else 0.6,
                [*ev.notes, _describe(view), "the frames below it run an asyncio event loop"],
                view,
            )
    return None


def signal_pending(ev: Evidence) -> Verdict | None:
    """The main thread is inside a C call that does not return to the interpreter.

    Only the first cause when a SIGTERM came. CPython's own flag says so where it
    can be read (`ProcessSample.sigterm_pending`): when it says none came, nothing
    acted on the cancel, and this C call is a secondary finding (`also`).
    """
    engine = ev.engine
    main = main_thread(engine) if engine else None
    if engine is None or main is None or main.call.interruptible:
        return None
    evidence = [
        *ev.notes,
        _describe(main),
        "Prefect's SIGTERM handler runs in the main thread between bytecodes; "
        "this C call does not return to the interpreter, so the handler stays pending",
    ]
    evidence.extend(_socket_facts(ev, engine, main))
    confidence = 0.85 if main.stable else 0.6
    if engine.sigterm_pending is True:
        evidence.append(
            "the interpreter holds a SIGTERM it has not handled (CPython's Handlers[SIGTERM].tripped = 1, "
            "read from the process's memory): a SIGTERM was delivered"
        )
        confidence = 0.95 if main.stable else 0.7
    elif engine.sigterm_pending is None:
        evidence.append(
            "whether a SIGTERM was delivered could not be read from the interpreter "
            "(CPython 3.10/3.11 builds with a symbol table only)"
        )
    delivered, channel = control_channel(engine)
    if channel:
        evidence.append(channel)
    pending = _verdict(
        Cause.SIGNAL_PENDING,
        f"The main thread is inside a C call ({main.where()}) that does not return to Python, "
        "so the SIGTERM handler cannot run.",
        confidence,
        evidence,
        main,
    )
    not_sent = engine.sigterm_pending is False or (engine.sigterm_pending is None and delivered is False)
    if not not_sent or ev.state_type not in (None, StateType.CANCELLING):
        return pending
    later = dataclasses.replace(
        pending,
        summary=f"Once a SIGTERM comes, this C call ({main.where()}) will still hold it pending.",
    )
    why = (
        "the interpreter holds no SIGTERM (CPython's Handlers[SIGTERM].tripped = 0, read from the "
        "process's memory), and the C call would have kept one pending: none was delivered"
        if engine.sigterm_pending is False
        else f"{channel}: no SIGTERM was sent"
    )
    return _none_came_first(ev, engine, main, why, later, main)


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
    evidence = [*ev.notes, _describe(main), why_no_sigterm]
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
        evidence.append(_describe(awaited))
    evidence.extend(_socket_facts(ev, engine, focus))
    who, confidence = _who_should_act(ev, engine, evidence)
    still = (
        f"it still awaits {focus.where()} in thread {focus.name}"
        if awaited
        else f"it is still in {main.where()}"
    )
    return _verdict(
        Cause.CANCEL_NOT_OBSERVED,
        f"No SIGTERM reached the flow process {engine.pid} ({who}); {still}.",
        confidence,
        evidence,
        focus,
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


def _none_came_first(
    ev: Evidence, engine: ProcessSample, main: ThreadView, why: str, later: Verdict, holder: ThreadView
) -> Verdict:
    """The process shows no SIGTERM came (`why`): `cancel_not_observed` comes first, and `later`,
    what will hold the process in `holder` once one comes, is the secondary finding."""
    first = _not_observed(ev, engine, main, why)
    described = _describe(holder)
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
    verdict = _verdict(
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
            evidence.append(_worker_fact(worker, f"worker {worker.name}: {worker.status}"))
            order = heartbeat_against_cancel(worker, run)
            if order:
                evidence.append(order[0])
                maybe_alive_at_cancel = maybe_alive_at_cancel or not order[1]
    if ev.runner is not None and ev.runner.state in ("T", "t"):
        evidence.append(f"the Runner {ev.runner.pid} is stopped (state {ev.runner.state}): it cannot act")
        return "its Runner is stopped", 0.9
    container = _in_container(ev)
    if container is not None and ev.runner is None:
        command = " ".join(container.command) or "?"
        evidence.append(
            f"the container's command is `{command[:160]}`: no Prefect Runner "
            "(`prefect flow-run execute`) runs in it to act on the cancel"
        )
        return "the container's command runs no Prefect Runner", 0.9
    if ev.runner is None:
        evidence.append(_runner_gone_fact(ev, engine))
        confidence = 0.9
        delivery = ev.delivery
        if maybe_alive_at_cancel and (delivery is None or delivery.sigterm is not Delivered.NO):
            # It may have sent SIGTERM before it died (within the Runner's grace window).
            confidence = 0.6
        if "prefect.engine" in cmd or "prefect" in cmd:
            return "the worker or Runner that owns the run is gone", confidence
        return "no Prefect Runner watches this process", min(confidence, 0.8)
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
        facts.extend(_describe(v) for v in thread_views(process)[:1])
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
    return _verdict(Cause.UNKNOWN, summary, 0.2, facts)


RULES: tuple[Rule, ...] = (
    not_attachable,
    never_started,
    orphaned,
    cancellation_hook_hang,
    infrastructure_gone,
    children_survive,
    uninterruptible,
    pid1_no_forward,
    signal_ignored,
    handler_starved,
    exception_swallowed,
    absorbed_unseen,
    exit_blocked_by_thread,
    event_loop_blocked,
    signal_pending,
    cancel_not_observed,
    unknown,
)


#: The highest confidence a verdict that no SIGTERM came may keep while a source that could
#: refute it was not read, or while a sign says one came.
_UNREAD_CEILING = 0.75
_CONFLICT_CEILING = 0.45


def refute(verdict: Verdict, delivery: Delivery | None) -> Verdict:
    """The last step: look for the evidence that would refute the verdict, and weigh it.

    Only `cancel_not_observed` for a live flow process says that no SIGTERM came. A sign that
    one came (a `kill` event, the pod Terminating, the pending flag, the flow's own log line)
    contradicts it: it drops below 0.5 and says what conflicts. A source that could have
    refuted it but was not read keeps it below 0.8, and says which.
    """
    if delivery is None:
        return verdict
    verdict = dataclasses.replace(verdict, delivery=delivery)
    if verdict.cause is not Cause.CANCEL_NOT_OBSERVED:
        return verdict
    if delivery.signs_for:
        conflicts = tuple(f"conflicts with 'no SIGTERM came': {sign}" for sign in delivery.signs_for)
        return dataclasses.replace(
            verdict,
            summary=f"{verdict.summary} Yet a sign says a SIGTERM did come ({delivery.signs_for[0]}): what "
            "absorbed it could not be read, so this verdict is uncertain.",
            confidence=min(verdict.confidence, _CONFLICT_CEILING),
            evidence=(*verdict.evidence, *conflicts),
        )
    if delivery.unread and verdict.confidence > _UNREAD_CEILING:
        unread = tuple(
            f"not read here, and it could refute 'no SIGTERM came': {what}" for what in delivery.unread
        )
        return dataclasses.replace(verdict, confidence=_UNREAD_CEILING, evidence=(*verdict.evidence, *unread))
    return verdict


def diagnose(ev: Evidence) -> Verdict:
    """Apply the rules in order; `unknown` always matches.

    The verdict's first fix is what ends the run now (`stop_now`), then the change
    that keeps it from happening again.
    """
    for rule in RULES:
        verdict = rule(ev)
        if verdict is not None:
            if ev.target is not None:  # what only the run's kind of target can say
                kind = kind_of(ev.target.kind)
                facts = kind.facts(ev.target, verdict.cause, runner_runs=ev.runner is not None)
                short = kind.short_fix(verdict.cause) or verdict.short_fix
                verdict = dataclasses.replace(verdict, evidence=verdict.evidence + facts, short_fix=short)
            verdict = refute(verdict, ev.delivery)
            commands = stop_commands(ev, verdict.cause)
            if commands:
                remediation = (stop_line(commands), *verdict.remediation)
                verdict = dataclasses.replace(verdict, stop_now=commands, remediation=remediation)
            return verdict
    raise AssertionError("the last rule always matches")  # pragma: no cover
