"""What every rule builds with: the verdict and its fixes, a thread described, the commands that
stop a run now, the facts of sockets and workers."""

from __future__ import annotations

import signal

from prefect_cancel_doctor.core.durations import seconds_text
from prefect_cancel_doctor.core.remedies import mark_cancelled_command, remediation, short_fix
from prefect_cancel_doctor.diagnose.evidence import Evidence
from prefect_cancel_doctor.kinds.base import ContainerView
from prefect_cancel_doctor.kinds.registry import kind_of
from prefect_cancel_doctor.model import (
    DEFAULT_HEARTBEAT_SECONDS,
    CallKind,
    Cause,
    ProcessSample,
    StateType,
    Verdict,
    WorkerInfo,
)
from prefect_cancel_doctor.sample.classify import db_port_name
from prefect_cancel_doctor.sample.threads import ThreadView

SIGTERM = int(signal.SIGTERM)


RUNNER_GRACE_SECONDS = 30.0


def has_signal(mask: int, signum: int) -> bool:
    return bool(mask >> (signum - 1) & 1)


def make_verdict(
    cause: Cause,
    summary: str,
    confidence: float,
    evidence: list[str],
    view: ThreadView | None = None,
    extra_fixes: tuple[str, ...] = (),
    first_fixes: tuple[str, ...] = (),
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
        remediation=first_fixes + remediation(cause, call) + extra_fixes,
        short_fix=short_fix(cause, call),
    )


def describe_thread(view: ThreadView) -> str:
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


def socket_facts(ev: Evidence, process: ProcessSample, view: ThreadView | None) -> list[str]:
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


def worker_fact(worker: WorkerInfo, fact: str) -> str:
    """`fact` (the worker's status) with its heartbeat, against its interval."""
    beat, interval = worker.seconds_since_heartbeat, worker.heartbeat_interval_seconds
    if beat is not None:
        every = seconds_text(interval or DEFAULT_HEARTBEAT_SECONDS)
        fact += f", last heartbeat {seconds_text(beat)} ago (every {every}"
        fact += ": stale)" if worker.heartbeat_is_stale else ": fresh)"
    return fact


def in_container(ev: Evidence) -> ContainerView | None:
    return kind_of(ev.target.kind).in_container(ev.target) if ev.target is not None else None
