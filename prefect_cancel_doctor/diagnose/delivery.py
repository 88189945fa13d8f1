"""Did a SIGTERM reach the flow process, and where did it go? One judgement over every sign.

A flow process that still runs in a call a signal interrupts looks the same whether no
SIGTERM came or one came and the flow's own code absorbed it (a handler that returns, an
`except BaseException` that goes on, a thread that holds the GIL). The rules must not say
"none came" on the stack alone, so every source that can speak is read here and listed
for and against:

- the interpreter: CPython's pending flag (`Handlers[SIGTERM].tripped`), which SIGTERM
  handler is installed, the kernel's pending bits;
- Prefect: the Runner's control channel (3.9+), the run's own log lines after it entered
  Cancelling (the flow naming `TerminationSignal`);
- the infrastructure: a Kubernetes pod's deletion and the kubelet's `Killing` event, the
  Docker engine's `kill`/`stop` events — signals that go to the container's PID 1, so
  they speak of the flow process only where it is PID 1;
- the worker: whether it was alive when the cancel came (heartbeats read as intervals).

`judge` gives the `Delivery`; `absorber` says what would absorb (or absorbed) a SIGTERM
in the process as it is now.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

from prefect_cancel_doctor.clients.prefect_records import parse_time
from prefect_cancel_doctor.core.durations import seconds_text
from prefect_cancel_doctor.model import (
    DEFAULT_HEARTBEAT_SECONDS,
    Absorber,
    Delivered,
    Delivery,
    FlowRunRef,
    HandlerKind,
    ProcessSample,
    WorkerInfo,
)
from prefect_cancel_doctor.proc.procfs import has_signal
from prefect_cancel_doctor.sample.threads import ThreadView, thread_views

if TYPE_CHECKING:
    from prefect_cancel_doctor.diagnose.evidence import Evidence  # Evidence.delivery calls judge

SIGTERM = 15
#: The daemon thread of Prefect 3.9's control listener (prefect/_internal/control_listener.py).
CONTROL_LISTENER_THREAD = "prefect-control-listener"
#: How a Docker `kill` event names SIGTERM (the engine gives the number; older ones the name).
_SIGTERM_NAMES = frozenset({"15", "SIGTERM", "TERM"})
#: A log line that speaks of a termination signal reaching the flow; or Prefect 3.9's engine's own,
#: logged in the flow process when the Runner's SIGTERM raised TerminationSignal after its cancel
#: intent (`handle_cancellation` in prefect/flow_engine.py).
_TERMINATION_WORDS = re.compile(
    r"TerminationSignal|termination signal|SIGTERM|signal[ =]15\b|^Flow run was cancelled\.$", re.IGNORECASE
)


def main_thread(process: ProcessSample) -> ThreadView | None:
    """The process's main thread, if it was sampled."""
    views = thread_views(process)
    return views[0] if views and views[0].is_main else None


def control_channel(process: ProcessSample) -> tuple[bool | None, str | None]:
    """Did the Runner's cancel intent reach the flow process, by its control channel (Prefect 3.9+)?

    The Runner passes PREFECT__CONTROL_PORT; the process connects back and a daemon
    thread waits in `recv`. On cancel the Runner sends the intent, the thread
    acknowledges and returns (closing the socket), then the Runner sends SIGTERM.
    So a listener still waiting on an open connection means no cancel was sent.
    Returns (delivered: False / None when it cannot tell, the fact to show).
    """
    proc = process.proc
    if proc is None or proc.control_port is None or not process.dumps:
        return None, None
    port = proc.control_port
    listening = any(t.name == CONTROL_LISTENER_THREAD for t in process.dumps[-1])
    connected = any(
        s.state == "ESTABLISHED" and s.remote.rsplit(":", 1)[-1] == str(port) and s.remote.startswith("127.")
        for s in proc.sockets
    )
    if listening and connected:
        return False, (
            f"the Runner's control channel (127.0.0.1:{port}) is open and its listener thread still waits: "
            "the Runner never sent the cancel intent it sends just before SIGTERM"
        )
    return None, (
        f"the Runner's control channel (127.0.0.1:{port}) is closed: the Runner sent its cancel intent "
        "(and then SIGTERM), or the Runner went away"
    )


def gil_holder(process: ProcessSample) -> ThreadView | None:
    """A thread other than the main one that held the GIL in every sample (a C loop that never
    releases it), while the main thread held it in none."""
    if not process.dumps:
        return None
    held: dict[int, int] = {}
    main_held = 0
    main = main_thread(process)
    for dump in process.dumps:
        for thread in dump:
            if not thread.owns_gil:
                continue
            if main is not None and thread.thread_id == main.latest.thread_id:
                main_held += 1
            else:
                held[thread.thread_id] = held.get(thread.thread_id, 0) + 1
    if main_held:
        return None
    always = [tid for tid, count in held.items() if count == len(process.dumps)]
    return next((v for v in thread_views(process) if v.latest.thread_id in always), None)


def absorber(ev: Evidence) -> Absorber | None:
    """What would keep a SIGTERM from ending the flow process as it is now (or did)."""
    engine = ev.engine
    if engine is None or engine.proc is None:
        return None
    proc, handler, main = engine.proc, engine.sigterm_handler, main_thread(engine)
    if has_signal(proc.sig_ignored, SIGTERM) or (handler and handler.kind is HandlerKind.IGNORE):
        return Absorber.SIG_IGN
    if main is not None and main.kernel is not None and has_signal(main.kernel.sig_blocked, SIGTERM):
        return Absorber.BLOCKED
    if handler is not None and handler.kind is HandlerKind.OTHER:
        return Absorber.HANDLER_RETURNS
    if engine.sigterm_pending is True and gil_holder(engine) is not None:
        return Absorber.GIL_HELD
    if main is not None and not main.call.interruptible:
        return Absorber.C_CALL
    prefects = handler is None or handler.kind is HandlerKind.PREFECT
    if engine.cleanup and prefects and main is not None and not main.in_shutdown:
        return Absorber.CLEANUP_BLOCKS
    if engine.swallowing and prefects:
        return Absorber.EXCEPTION_SWALLOWED
    return None


def judge(ev: Evidence) -> Delivery | None:
    """Whether a SIGTERM came, on every sign that could be read; None where no flow process runs."""
    engine = ev.engine
    if engine is None:
        return None
    signs_for: list[str] = []
    against: list[str] = []
    unread: list[str] = []
    _interpreter(ev, engine, signs_for, against, unread)
    _infrastructure(ev, engine, signs_for, unread)
    _logs(ev, signs_for, unread)
    worker_gone = _worker_gone_before_cancel(ev)
    if worker_gone and ev.runner is None:
        against.append(worker_gone)
    sigterm = Delivered.YES if signs_for else Delivered.NO if against else Delivered.UNKNOWN
    return Delivery(
        sigterm=sigterm,
        absorbed_by=absorber(ev) if sigterm is Delivered.YES else None,
        signs_for=tuple(signs_for),
        signs_against=tuple(against),
        unread=tuple(unread),
    )


def _interpreter(
    ev: Evidence, engine: ProcessSample, signs_for: list[str], against: list[str], unread: list[str]
) -> None:
    proc, main = engine.proc, main_thread(engine)
    if engine.sigterm_pending is True:
        signs_for.append(
            "the interpreter holds a SIGTERM it has not handled yet "
            "(CPython's Handlers[SIGTERM].tripped = 1, "
            "read from the process's memory)"
        )
    elif engine.sigterm_pending is False and main is not None and not main.call.interruptible:
        against.append(
            "the interpreter holds no SIGTERM (CPython's Handlers[SIGTERM].tripped = 0) "
            "while its main thread "
            "sits in a C call that would have kept one pending"
        )
    elif engine.sigterm_pending is None and engine.dumps:
        unread.append("CPython's pending-SIGTERM flag (readable for CPython 3.10/3.11 with a symbol table)")
    if proc is not None and (
        has_signal(proc.sig_pending, SIGTERM) or has_signal(proc.shared_pending, SIGTERM)
    ):
        signs_for.append(
            f"the kernel holds a SIGTERM pending for process {proc.pid} (/proc status SigPnd/ShdPnd)"
        )
    if engine.sigterm_handler is None and engine.dumps:
        unread.append(
            "which SIGTERM handler the interpreter has installed (readable for CPython 3.10/3.11 with a "
            "symbol table, from the host)"
        )
    handler = engine.sigterm_handler
    if (
        handler is not None
        and handler.kind is HandlerKind.PREFECT
        and main is not None
        and main.call.interruptible
        and not main.in_shutdown  # the flow has unwound already: nothing left for a SIGTERM to end
        and not engine.swallowing
        and engine.sigterm_pending is not True
        and not engine.cleanup  # it may be unwinding from a SIGTERM that came: no sign either way
    ):
        against.append(
            f"the interpreter's SIGTERM handler is Prefect's ({handler.where()}), the main thread waits in "
            f"{main.call.function}, a call a signal interrupts, and no `except` around it catches "
            "TerminationSignal: a SIGTERM would have unwound the flow and ended the process"
        )
    delivered, channel = control_channel(engine)
    if delivered is False and channel:
        against.append(channel)
    elif channel and proc is not None and ev.runner is not None and ev.runner.state not in ("T", "t"):
        signs_for.append(
            f"the Runner's control channel (127.0.0.1:{proc.control_port}) is closed while its Runner "
            f"{ev.runner.pid} still runs: the Runner sent its cancel intent, "
            "which it sends just before SIGTERM"
        )


def _infrastructure(ev: Evidence, engine: ProcessSample, signs_for: list[str], unread: list[str]) -> None:
    """Signals the infrastructure sent: they go to the container's PID 1."""
    is_pid1 = engine.proc is not None and engine.proc.ns_pid == 1
    pod = ev.pod
    if pod is not None and pod.deletion_timestamp:
        target = (
            "the flow process (its PID 1)" if is_pid1 else "the container's PID 1, not to the flow process"
        )
        fact = (
            f"pod {pod.name} is Terminating since {pod.deletion_timestamp}: "
            f"the kubelet sent SIGTERM to {target}"
        )
        if is_pid1:
            signs_for.append(fact)
        for pod_event in pod.events:
            if pod_event.reason == "Killing" and is_pid1:
                signs_for.append(f"the kubelet's event Killing: {pod_event.message}")
    container = ev.container
    if container is None:
        return
    if container.events is None:
        if container.running and is_pid1:
            unread.append("the Docker engine's events for the container")
        return
    stop_signals = _SIGTERM_NAMES | ({container.stop_signal} if container.stop_signal else set())
    for event in container.events:
        sigterm = event.action == "kill" and (event.signal or "").upper() in stop_signals
        if (sigterm or event.action == "stop") and is_pid1:
            what = f"kill (signal {event.signal})" if event.action == "kill" else "stop"
            signs_for.append(
                f"the Docker engine's event at {event.at}: {what} of the container, "
                "to the flow process (its PID 1)"
            )


def _logs(ev: Evidence, signs_for: list[str], unread: list[str]) -> None:
    """The run's own lines after it entered Cancelling that speak of a termination signal."""
    run = ev.run
    if run is None:
        return
    if not ev.logs_read:
        unread.append("the run's logs")
        return
    since = parse_time(run.cancelling_since)
    for line in ev.logs:
        moment = parse_time(line.timestamp)
        if since is not None and (moment is None or moment < since):
            continue
        if _TERMINATION_WORDS.search(line.message):
            first = line.message.strip().splitlines()[0][:160] if line.message.strip() else ""
            signs_for.append(f"the run logged at {_clock(moment)}, after the cancel: {first!r}")
            return


def _clock(moment: datetime | None) -> str:
    return moment.strftime("%H:%M:%S") if moment else "?"


def _worker_gone_before_cancel(ev: Evidence) -> str | None:
    """The run's worker stopped before the cancel, as far as its heartbeats can tell."""
    run = ev.run
    worker = _run_worker(run)
    if run is None or worker is None:
        return None
    order = heartbeat_against_cancel(worker, run)
    return order[0] if order and order[1] else None


def _run_worker(run: FlowRunRef | None) -> WorkerInfo | None:
    if run is None:
        return None
    named = str(run.labels.get("prefect.worker.name", ""))
    return next((w for w in run.workers if w.name == named or not named), None)


def heartbeat_against_cancel(worker: WorkerInfo, run: FlowRunRef | None) -> tuple[str, bool] | None:
    """Whether the worker was alive when the cancel came, read as intervals: (the fact, whether it
    stopped before the cancel for sure).

    A heartbeat every N s says only that the worker stopped somewhere between its last heartbeat and
    the next one due (Prefect jitters the interval: `WorkerInfo.heartbeat_due_seconds`); "before the
    cancel" only when that whole span ends before the cancel."""
    if run is None or run.cancelling_for_seconds is None or worker.seconds_since_heartbeat is None:
        return None
    if not worker.heartbeat_is_stale:
        return None
    interval = worker.heartbeat_interval_seconds or DEFAULT_HEARTBEAT_SECONDS
    due = worker.heartbeat_due_seconds
    before = worker.seconds_since_heartbeat - run.cancelling_for_seconds
    if before > due:
        return (
            f"worker {worker.name} sent its last heartbeat {seconds_text(before)} before the run entered "
            f"Cancelling and missed the next, due at most {seconds_text(due)} later "
            f"(every {seconds_text(interval)}, jittered): it stopped before the cancel",
            True,
        )
    if before > 0:
        return (
            f"worker {worker.name} sent its last heartbeat {seconds_text(before)} before the run entered "
            f"Cancelling and none since; with the next due at most {seconds_text(due)} after it, it stopped "
            f"between {seconds_text(before)} before and {seconds_text(due - before)} after the cancel: "
            "it may have "
            "seen the cancel and signalled the flow before it died",
            False,
        )
    return (
        f"worker {worker.name} still heartbeated {seconds_text(-before)} after the run entered Cancelling, "
        "then stopped: it was alive when the cancel came",
        False,
    )


__all__ = [
    "CONTROL_LISTENER_THREAD",
    "absorber",
    "control_channel",
    "gil_holder",
    "heartbeat_against_cancel",
    "judge",
    "main_thread",
]
