"""Rules about where the run is and what is left of it: not reachable from here, never started,
orphaned, gone, children that survive, a PID 1 that drops SIGTERM, a hook that hangs."""

from __future__ import annotations

import dataclasses

from prefect_cancel_doctor.core.durations import seconds_text
from prefect_cancel_doctor.core.remedies import GROUP_SIGNAL_FIX
from prefect_cancel_doctor.diagnose.delivery import (
    main_thread,
)
from prefect_cancel_doctor.diagnose.evidence import Evidence
from prefect_cancel_doctor.diagnose.verdicts import (
    SIGTERM,
    describe_thread,
    has_signal,
    in_container,
    make_verdict,
    socket_facts,
    worker_fact,
)
from prefect_cancel_doctor.kinds import parse_infrastructure_pid
from prefect_cancel_doctor.kinds.registry import kind_of
from prefect_cancel_doctor.model import (
    FINAL_STATES,
    Cause,
    FlowRunRef,
    FoundBy,
    ProcessSample,
    Role,
    StateType,
    Verdict,
    WorkerStatus,
)
from prefect_cancel_doctor.proc.roles import worker_options
from prefect_cancel_doctor.sample.threads import ThreadView, thread_views


def not_attachable(ev: Evidence) -> Verdict | None:
    """The target exists (or may) but cannot be read from here."""
    if ev.unreachable is None:
        return None
    return make_verdict(Cause.NOT_ATTACHABLE, ev.unreachable, 0.9, [*ev.notes, ev.unreachable])


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
    claimed_name = str(run.labels.get("prefect.worker.name", ""))
    claimed = claimed_name or "the worker that claimed it"
    who = f"{claimed} is gone or stalled, and no other worker finishes a cancel it did not submit" + (
        " (its pool's other workers are online, and will not act)" if online else ""
    )
    # What refutes it: the claiming worker alive and still submitting the run (it cancels the runs
    # it is submitting itself). A claimer known to be down, or no live worker at all, leaves none.
    claimer = next((w for w in run.workers if w.name == claimed_name), None)
    claimer_alive = (
        claimer is not None and claimer.status == WorkerStatus.ONLINE and not claimer.heartbeat_is_stale
    )
    if claimer is not None and not claimer_alive:
        confidence = 0.95
    elif claimer is None and not any(not w.heartbeat_is_stale for w in online):
        confidence = 0.9
    else:
        confidence = 0.75
        if claimer_alive:
            evidence.append(
                f"its worker {claimed} is online with a fresh heartbeat: it may still be submitting the run, "
                "and it cancels the runs it is submitting itself"
            )
    return make_verdict(
        Cause.NEVER_STARTED,
        f"A worker claimed the run but its infrastructure never started; {who}.",
        confidence,
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
        evidence.append(describe_thread(view))
    evidence.extend(socket_facts(ev, engine, view))
    timed_out = bool(message and "timed out" in message)
    why = " after the server's cancellation timeout" if timed_out else ""
    return make_verdict(
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
        return make_verdict(
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
        evidence.append(worker_fact(worker, f"its worker {worker.name} is {worker.status}"))
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
        return make_verdict(
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
    return make_verdict(
        Cause.INFRASTRUCTURE_GONE,
        "The run's process is gone; only its API state is stuck in Cancelling "
        "(nothing is left to report Cancelled).",
        # launched here (a trace of it, or its infrastructure_pid naming this host), with every
        # process of this host read: nothing of it can run anywhere else
        0.95 if ev.launched_here else 0.9 if ev.runners or (worker is not None and not alive) else 0.7,
        evidence,
    )


def pid1_no_forward(ev: Evidence) -> Verdict | None:
    """A container's PID 1 is a shell or wrapper without a SIGTERM handler: the kernel drops SIGTERM."""
    pid1 = ev.pid1
    container = in_container(ev)
    if pid1 is None or pid1.proc is None or container is None or container.has_init:
        return None
    if has_signal(pid1.proc.sig_caught, SIGTERM) or ev.engine is None:
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
        evidence.append(describe_thread(main))
    return make_verdict(
        Cause.PID1_NO_FORWARD,
        f"PID 1 of the container is `{command[:60]}`, which does not forward SIGTERM to the flow "
        "process" + (f" (still in {main.where()})." if main else "."),
        0.9,
        evidence,
        main,
    )


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
    return make_verdict(
        Cause.CANCELLATION_HOOK_HANG,
        f"The flow process is gone, but its on_cancellation hook hangs in {view.where()} "
        f"({where} pid {process.pid}); Cancelled is proposed only after the hooks return.",
        0.9 if view.stable else 0.6,
        [
            *ev.notes,
            f"{where} {process.pid}: {cmd}",
            describe_thread(view),
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
    verdict = make_verdict(
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
