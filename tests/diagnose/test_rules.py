"""The rules on recorded py-spy dumps of real stuck programs (tests/fixtures/programs/).

The kernel's view is given per case (state, wait channel, syscall, signal masks),
as /proc showed it for the same programs; the API's view is a FlowRunRef.
"""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import pytest

from prefect_cancel_doctor.core.remedies import RUN_A_RUNNER_FIX
from prefect_cancel_doctor.diagnose.rules import Evidence, diagnose
from prefect_cancel_doctor.model import (
    CallKind,
    Cause,
    ContainerInfo,
    FlowRunRef,
    HandlerKind,
    KernelThread,
    ProcessSample,
    ProcSnapshot,
    SigtermHandler,
    Target,
    WorkerInfo,
)
from prefect_cancel_doctor.sample.pyspy import parse_dump

FIXTURES = Path(__file__).parents[1] / "fixtures" / "pyspy"
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def run_ref(state: str = "CANCELLING", **changes: object) -> FlowRunRef:
    ref = FlowRunRef(
        id="0b6c9d6e-0000-4000-8000-000000000001",
        name="brave-otter",
        flow_name="etl",
        deployment_name="nightly",
        work_pool_name="pool",
        state_type=state,
        state_name=state.title(),
        state_message=None,
        start_time="2026-11-27T10:00:00Z",
        infrastructure_pid="4242",
        labels={"prefect.worker.name": "w1"},
        cancelling_for_seconds=900.0,
        cancelling_since="2026-11-27T10:05:00Z",
        workers=(WorkerInfo("w1", "OFFLINE", "2026-11-27T10:01:00Z", 840.0),),
    )
    return dataclasses.replace(ref, **changes)  # type: ignore[arg-type]


def process(
    fixture: str,
    role: str = "engine",
    state: str = "S",
    wchan: str = "hrtimer_nanosleep",
    syscall: str = "clock_nanosleep",
    sig_ignored: int = 0,
    repeat: int = 3,
    kernel: dict[int, tuple[str, str, str]] | None = None,
    ppid: int = 1,
) -> ProcessSample:
    """A ProcessSample from a recorded dump, repeated `repeat` times, with the kernel view given."""
    threads = parse_dump((FIXTURES / f"{fixture}.json").read_text())
    pid = next(t.native_id for t in threads if t.native_id is not None)
    pid = min(t.native_id or pid for t in threads)
    kernel = kernel or {}
    kthreads = tuple(
        KernelThread(
            tid=t.native_id or 0,
            name=t.name or "python",
            state=kernel.get(t.native_id or 0, (state, wchan, syscall))[0],
            wchan=kernel.get(t.native_id or 0, (state, wchan, syscall))[1],
            syscall=None,
            syscall_name=kernel.get(t.native_id or 0, (state, wchan, syscall))[2],
        )
        for t in threads
    )
    by_tid = {k.tid: k for k in kthreads}
    merged = tuple(dataclasses.replace(t, kernel=by_tid.get(t.native_id or 0)) for t in threads)
    proc = ProcSnapshot(
        pid=pid,
        ppid=ppid,
        cmdline=("python", "-m", "prefect.engine"),
        comm="python",
        state=state,
        ns_pid=pid,
        sig_ignored=sig_ignored,
        sig_caught=0,
        sig_blocked=0,
        sig_pending=0,
        shared_pending=0,
        threads=kthreads,
        sockets=(),
        children=(),
        flow_run_id=run_ref().id,
        start_time_ticks=1,
    )
    return ProcessSample(pid, role, proc, (merged,) * repeat, native="native" in fixture)


def evidence(*processes: ProcessSample, run: FlowRunRef | None = None, **kw: object) -> Evidence:
    target = Target(kind="process", description="test", processes=processes)
    return Evidence(run if run is not None else run_ref(), target, **kw)  # type: ignore[arg-type]


def program_line(program: str, marker: str) -> int:
    source = (Path(__file__).parents[1] / "fixtures" / "programs" / program).read_text()
    return next(i for i, line in enumerate(source.splitlines(), 1) if marker in line)


def test_sleep_with_its_runner_gone_is_cancel_not_observed() -> None:
    verdict = diagnose(evidence(process("sleep_main_native")))
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED
    assert verdict.blocking_call is not None
    assert verdict.blocking_call.kind is CallKind.SLEEP
    assert verdict.blocking_call.function == "time.sleep"
    assert verdict.blocking_call.filename is not None
    assert verdict.blocking_call.filename.endswith("sleep_main.py")
    assert any("Runner that launched" in e and "gone" in e for e in verdict.evidence)
    assert any("worker w1: OFFLINE" in e for e in verdict.evidence)


def test_only_a_run_without_a_runner_is_told_to_run_one() -> None:
    # A Runner launched it and died: running a Runner is no fix, it ran one.
    died = diagnose(evidence(process("sleep_main_native")))
    assert died.cause is Cause.CANCEL_NOT_OBSERVED and RUN_A_RUNNER_FIX not in died.remediation
    # The container's command runs the engine without a Runner: nothing could ever act on a cancel.
    container = ContainerInfo(
        id="c" * 64, name="etl", status="running", running=True, command=("python", "-m", "prefect.engine")
    )
    target = Target("docker", "container", processes=(process("sleep_main_native"),), container=container)
    none_ran = diagnose(Evidence(run_ref(), target))
    assert none_ran.cause is Cause.CANCEL_NOT_OBSERVED
    assert "runs no Prefect Runner" in none_ran.summary
    # first after the two ways to end it now
    assert none_ran.remediation[2] == RUN_A_RUNNER_FIX, none_ran.remediation


def test_live_runner_and_a_long_cancel_point_to_a_failed_observer() -> None:
    engine = dataclasses.replace(
        process("sleep_main_native", ppid=77),
        sigterm_pending=False,
        sigterm_handler=SigtermHandler(HandlerKind.PREFECT, "_prefect_sigterm_handler"),
    )
    ev = evidence(engine, runner=process("sleep_main").proc, logs_read=True)
    verdict = diagnose(ev)
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED
    assert "observer" in verdict.summary
    assert verdict.confidence >= 0.8
    assert verdict.delivery is not None and not verdict.delivery.unread
    # The same verdict without the interpreter's handler read: a refuting source unread keeps it below 0.8.
    unread = diagnose(evidence(process("sleep_main_native", ppid=77), runner=process("sleep_main").proc))
    assert unread.cause is Cause.CANCEL_NOT_OBSERVED and unread.confidence < 0.8
    assert any("not read here" in line and "handler" in line for line in unread.evidence)


def test_recent_cancel_with_live_runner_has_low_confidence() -> None:
    ev = evidence(
        process("sleep_main_native"),
        run=run_ref(cancelling_for_seconds=5.0),
        runner=process("sleep_main").proc,
    )
    assert diagnose(ev).confidence <= 0.5


def test_sqlite_busy_wait_keeps_sigterm_pending() -> None:
    verdict = diagnose(evidence(process("sqlite_busy_native")))
    assert verdict.cause is Cause.SIGNAL_PENDING
    assert verdict.blocking_call is not None
    assert verdict.blocking_call.kind is CallKind.DATABASE
    assert verdict.blocking_call.line == program_line("sqlite_busy.py", "# BLOCK")
    assert any("timeout" in fix for fix in verdict.remediation)


@pytest.mark.parametrize("fixture", ["pbkdf2", "pbkdf2_native"])
def test_c_computation_keeps_sigterm_pending(fixture: str) -> None:
    verdict = diagnose(evidence(process(fixture, state="R", wchan="0", syscall="")))
    assert verdict.cause is Cause.SIGNAL_PENDING
    assert verdict.blocking_call is not None
    assert verdict.blocking_call.kind is CallKind.CPU


def test_pure_python_loop_would_run_the_handler() -> None:
    sample = process("sleep_main", state="R", wchan="0", syscall="")
    hot = tuple(
        tuple(dataclasses.replace(t, owns_gil=True, active=True) for t in dump) for dump in sample.dumps
    )
    verdict = diagnose(evidence(dataclasses.replace(sample, dumps=hot)))
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED


def test_sigterm_ignored_wins_over_the_blocking_call() -> None:
    verdict = diagnose(evidence(process("sleep_main_native", sig_ignored=SIGTERM_BIT)))
    assert verdict.cause is Cause.SIGNAL_IGNORED
    assert verdict.blocking_call is not None and verdict.blocking_call.kind is CallKind.SLEEP


def test_main_thread_in_shutdown_waits_for_a_non_daemon_thread() -> None:
    kernel = {6107: ("S", "futex_wait_queue", "futex")}
    verdict = diagnose(evidence(process("thread_sleep_native", kernel=kernel)))
    assert verdict.cause is Cause.EXIT_BLOCKED_BY_THREAD
    assert verdict.blocking_call is not None
    assert verdict.blocking_call.thread_name == "uploader"
    assert verdict.blocking_call.kind is CallKind.SLEEP
    assert verdict.confidence >= 0.9
    # The main thread waits in threading._shutdown, which a signal interrupts: it is not "stuck for good".
    assert "one more SIGTERM ends it" in verdict.summary and "cannot exit" not in verdict.summary
    assert verdict.stop_now[0].startswith("kill -TERM ")
    # A thread's sleep is not on an event loop: no advice for async code.
    assert any("wait on an Event" in fix for fix in verdict.remediation)
    assert not any("anyio" in fix or "async" in fix for fix in verdict.remediation)


def test_a_main_thread_waiting_on_a_pool_task_while_cancelling_got_no_sigterm() -> None:
    """The flow awaits a `.submit()`ted task; the run is Cancelling and its worker died first.

    A SIGTERM would have unwound the main thread (Future.result waits in a call a signal
    interrupts): none came, so that is the first line; the pool thread is what will hold
    the process once one comes (`also`)."""
    kernel = {25810: ("S", "futex_wait_queue", "futex")}
    verdict = diagnose(evidence(process("pool_wait_native", kernel=kernel)))
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED
    assert verdict.blocking_call is not None
    assert verdict.blocking_call.function == "concurrent.futures._base.Future.result"
    assert verdict.blocking_call.line == program_line("pool_wait.py", "# WAIT")
    (later,) = verdict.also
    assert later.cause is Cause.EXIT_BLOCKED_BY_THREAD
    assert later.blocking_call is not None and later.blocking_call.thread_name == "ThreadPoolExecutor-0_0"
    assert later.blocking_call.line == program_line("pool_wait.py", "# BLOCK")
    assert later.summary.startswith("Once a SIGTERM comes")
    assert any("ThreadPoolExecutor-0_0" in fact for fact in verdict.evidence)


def test_the_same_process_outside_a_cancel_predicts_the_thread_that_will_hold_it() -> None:
    """`inspect --pid` of a flow that is not being cancelled: no 'no SIGTERM came' to claim."""
    kernel = {25810: ("S", "futex_wait_queue", "futex")}
    sample = process("pool_wait_native", kernel=kernel)
    verdict = diagnose(Evidence(None, Target(kind="process", description="test", processes=(sample,))))
    assert verdict.cause is Cause.EXIT_BLOCKED_BY_THREAD
    assert verdict.also == ()


def test_an_async_flow_awaiting_to_thread_points_at_the_thread_it_awaits() -> None:
    """The loop is idle in its selector (the awaiting coroutine is suspended: no stack shows
    it); the default executor's thread sleeps. Cancelling with no SIGTERM: the blocking call
    is that thread's, not the loop's epoll_wait; and it is what a SIGTERM would then wait for."""
    kernel = {
        12625: ("S", "do_epoll_wait", "epoll_wait"),
        12667: ("S", "hrtimer_nanosleep", "clock_nanosleep"),
    }
    verdict = diagnose(evidence(process("to_thread_wait_native", kernel=kernel)))
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED
    assert verdict.blocking_call is not None
    assert (verdict.blocking_call.thread_name, verdict.blocking_call.function) == ("asyncio_0", "time.sleep")
    assert verdict.blocking_call.kind is CallKind.SLEEP
    assert "awaits time.sleep in thread asyncio_0" in verdict.summary
    assert [finding.cause for finding in verdict.also] == [Cause.EXIT_BLOCKED_BY_THREAD]
    assert len(verdict.evidence) == len(set(verdict.evidence))


def test_an_idle_pool_thread_is_not_what_the_flow_waits_on() -> None:
    """A thread-pool thread idle on its queue (no work item) holds nothing: the loop's wait stays."""
    kernel = {12625: ("S", "do_epoll_wait", "epoll_wait"), 12667: ("S", "futex_wait_queue", "futex")}
    sample = process("to_thread_wait_native", kernel=kernel)
    idle = tuple(
        tuple(
            dataclasses.replace(
                t, frames=tuple(f for f in t.frames if not f.function.endswith("_WorkItem.run"))
            )
            for t in dump
        )
        for dump in sample.dumps
    )
    verdict = diagnose(evidence(dataclasses.replace(sample, dumps=idle)))
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED
    assert verdict.blocking_call is not None and verdict.blocking_call.thread_name == "MainThread"
    assert verdict.also == ()


def test_blocking_call_on_the_event_loop() -> None:
    verdict = diagnose(evidence(process("asyncio_blocking_native")))
    assert verdict.cause is Cause.EVENT_LOOP_BLOCKED
    assert verdict.blocking_call is not None
    assert verdict.blocking_call.on_event_loop
    assert verdict.blocking_call.kind is CallKind.SLEEP
    assert any("anyio.sleep" in fix for fix in verdict.remediation)


def test_socket_read_is_interruptible_so_no_sigterm_came() -> None:
    verdict = diagnose(evidence(process("socket_recv_native", wchan="wait_woken", syscall="recvfrom")))
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED
    assert verdict.blocking_call is not None and verdict.blocking_call.kind is CallKind.NETWORK_IO


def test_thread_in_state_d_is_uninterruptible_io() -> None:
    kernel = {6108: ("D", "rpc_wait_bit_killable", "read")}
    verdict = diagnose(evidence(process("thread_sleep_native", kernel=kernel)))
    assert verdict.cause is Cause.UNINTERRUPTIBLE_IO


def test_no_process_left_is_infrastructure_gone() -> None:
    assert diagnose(evidence()).cause is Cause.INFRASTRUCTURE_GONE


def test_cancelled_run_with_live_engine_is_an_orphan() -> None:
    run = run_ref(
        "CANCELLED", state_message="Flow run cancellation timed out; marked this flow run as Cancelled."
    )
    verdict = diagnose(evidence(process("sleep_main_native"), run=run))
    assert verdict.cause is Cause.ORPHANED_INFRASTRUCTURE
    assert "cancellation timeout" in verdict.summary


@pytest.mark.parametrize("state", ["CANCELLING", "CANCELLED"])
def test_only_children_left_is_child_process_survives(state: str) -> None:
    verdict = diagnose(evidence(process("sleep_main_native", role="child"), run=run_ref(state)))
    assert verdict.cause is Cause.CHILD_PROCESS_SURVIVES
    assert verdict.blocking_call is not None and verdict.blocking_call.kind is CallKind.SLEEP


def test_never_started_names_the_pool_and_its_workers() -> None:
    run = run_ref(start_time=None, infrastructure_pid=None)
    verdict = diagnose(evidence(run=run))
    assert verdict.cause is Cause.NEVER_STARTED
    assert any("worker w1 of pool pool: OFFLINE" in line for line in verdict.evidence)
    # Since Prefect 3.6.9 a new worker does not finish a cancel it did not submit: no
    # "start a worker" advice; the first fix marks the run Cancelled, with its id filled in.
    assert not any("prefect worker start" in fix for fix in verdict.remediation)
    (mark,) = verdict.stop_now
    assert (
        mark.startswith(f"prefect api POST /flow_runs/{run.id}/set_state --data '") and '"force":true' in mark
    )
    assert verdict.remediation[0] == f"end it now, safely: `prefect-cancel-doctor resolve {run.name}`"
    assert verdict.remediation[1] == f"or by hand, in order: `{mark}`"


def test_a_hostile_run_id_never_reaches_a_shell_command() -> None:
    run = run_ref(start_time=None, infrastructure_pid=None, id="x'; rm -rf / #")
    verdict = diagnose(evidence(run=run))
    assert verdict.cause is Cause.NEVER_STARTED and verdict.stop_now == ()


def test_unreachable_target_is_not_attachable() -> None:
    verdict = diagnose(evidence(run=run_ref(infrastructure_pid="other:12"), unreachable="on host other"))
    assert verdict.cause is Cause.NOT_ATTACHABLE


def test_a_call_that_moves_between_samples_is_work_in_progress() -> None:
    still = process("sleep_main_native", repeat=2)
    thread = still.dumps[0][0]
    moved_frame = dataclasses.replace(thread.frames[0], line=thread.frames[0].line + 1)
    moved = dataclasses.replace(thread, frames=(moved_frame, *thread.frames[1:]))
    sample = dataclasses.replace(still, dumps=(*still.dumps, (moved,)))
    verdict = diagnose(evidence(sample))
    assert verdict.blocking_call is not None and not verdict.blocking_call.stable
    assert verdict.confidence <= 0.6
    assert any("work in progress" in e for e in verdict.evidence)


def test_runner_in_user_code_after_the_flow_is_gone_is_a_hanging_hook() -> None:
    runner = process("thread_sleep_native", role="runner")
    verdict = diagnose(evidence(runner))
    assert verdict.cause is Cause.CANCELLATION_HOOK_HANG
    assert verdict.blocking_call is not None and verdict.blocking_call.thread_name == "uploader"


def test_another_worker_of_the_pool_in_code_of_its_own_is_no_hanging_hook() -> None:
    """Only the worker that ran the run (label prefect.worker.name) runs its hooks: a standby
    worker of the pool caught in a start-up script or a sitecustomize is not one."""
    runner = process("thread_sleep_native", role="runner")
    for name, cause in (("w1", Cause.CANCELLATION_HOOK_HANG), ("standby", Cause.INFRASTRUCTURE_GONE)):
        assert runner.proc is not None
        argv = ("/venv/bin/prefect", "worker", "start", "--pool", "pool", "--name", name)
        named = dataclasses.replace(runner, proc=dataclasses.replace(runner.proc, cmdline=argv))
        assert diagnose(evidence(named)).cause is cause, name


def test_runner_without_user_code_leaves_the_run_gone() -> None:
    runner = process("sleep_main", role="runner")
    library_only = tuple(
        tuple(
            dataclasses.replace(
                t, frames=tuple(dataclasses.replace(f, filename="/usr/lib/python3.11/x.py") for f in t.frames)
            )
            for t in dump
        )
        for dump in runner.dumps
    )
    verdict = diagnose(evidence(dataclasses.replace(runner, dumps=library_only)))
    assert verdict.cause is Cause.INFRASTRUCTURE_GONE


def test_a_finished_run_with_nothing_left_needs_no_attention() -> None:
    from prefect_cancel_doctor.model import Diagnosis

    run = run_ref("COMPLETED")
    ev = evidence(run=run)
    verdict = diagnose(ev)
    assert verdict.cause is Cause.UNKNOWN
    assert "not stuck in Cancelling" in verdict.summary
    assert not Diagnosis(run, ev.target, verdict).needs_attention


def test_a_started_run_without_infrastructure_pid_is_not_called_gone() -> None:
    verdict = diagnose(evidence(run=run_ref(infrastructure_pid=None)))
    assert verdict.cause is Cause.NOT_ATTACHABLE
    assert "no infrastructure_pid" in verdict.summary


def test_nothing_here_but_its_worker_online_elsewhere_is_not_attachable() -> None:
    online = (WorkerInfo("w1", "ONLINE", "2026-11-27T10:20:00Z", 3.0),)
    verdict = diagnose(evidence(run=run_ref(workers=online)))
    assert verdict.cause is Cause.NOT_ATTACHABLE
    assert any("run the doctor on the host of worker w1" in fix for fix in verdict.remediation)


def test_launched_here_with_its_worker_fresh_but_gone_from_this_host_is_gone() -> None:
    online = (WorkerInfo("w1", "ONLINE", "2026-11-27T10:20:00Z", 3.0),)
    trace = "/tmp/prefect-workspace-attempt-x/supervisor.json"
    verdict = diagnose(evidence(run=run_ref(workers=online), launched_here=trace))
    assert verdict.cause is Cause.INFRASTRUCTURE_GONE
    assert not any("run the doctor on the host" in fix for fix in verdict.remediation)
    assert any("three heartbeats" in e for e in verdict.evidence)


def test_nothing_here_and_its_worker_offline_is_gone() -> None:
    verdict = diagnose(evidence())
    assert verdict.cause is Cause.INFRASTRUCTURE_GONE
    assert any("worker w1 is OFFLINE" in e for e in verdict.evidence)


def test_a_live_hook_subprocess_after_the_flow_is_gone_is_a_hanging_hook() -> None:
    verdict = diagnose(evidence(process("sleep_main_native", role="hook")))
    assert verdict.cause is Cause.CANCELLATION_HOOK_HANG
    assert verdict.blocking_call is not None and verdict.blocking_call.kind is CallKind.SLEEP
    assert "hook subprocess" in verdict.summary


def test_never_started_without_a_pool_does_not_name_a_pool_none() -> None:
    run = run_ref(start_time=None, infrastructure_pid=None, work_pool_name=None, workers=())
    verdict = diagnose(Evidence(run, Target(kind="none", description="nothing here")))
    assert verdict.cause is Cause.NEVER_STARTED
    text = " ".join([verdict.summary, *verdict.evidence, *verdict.remediation])
    assert "None" not in text and "no work pool" in text


def test_unknown_without_any_stack_says_so_instead_of_pointing_at_stacks() -> None:
    sample = process("sleep_main_native", repeat=1)
    failed = dataclasses.replace(sample, dumps=(), errors=("py-spy timed out after 10 s",))
    verdict = diagnose(evidence(failed, run=run_ref(workers=())))
    assert verdict.cause is Cause.UNKNOWN
    assert verdict.summary == "No rule matched and no stack could be taken: py-spy timed out after 10 s."


def test_a_c_call_with_no_sigterm_delivered_is_first_cancel_not_observed_then_pending() -> None:
    engine = dataclasses.replace(process("sqlite_busy_native"), sigterm_pending=False)
    verdict = diagnose(evidence(engine))
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED
    assert verdict.blocking_call is not None and verdict.blocking_call.kind is CallKind.DATABASE
    assert any("Handlers[SIGTERM].tripped = 0" in line for line in verdict.evidence)
    (later,) = verdict.also
    assert later.cause is Cause.SIGNAL_PENDING
    assert later.summary.startswith("Once a SIGTERM comes")
    assert any("timeout" in fix for fix in later.remediation)


def test_a_delivered_sigterm_read_from_the_interpreter_raises_confidence() -> None:
    unknown = diagnose(evidence(process("sqlite_busy_native")))
    delivered = diagnose(evidence(dataclasses.replace(process("sqlite_busy_native"), sigterm_pending=True)))
    assert unknown.cause is delivered.cause is Cause.SIGNAL_PENDING
    assert delivered.confidence > unknown.confidence and not delivered.also
    assert any("tripped = 1" in line for line in delivered.evidence)
    assert any("could not be read" in line for line in unknown.evidence)


@pytest.mark.parametrize(
    ("seconds_since_heartbeat", "cause"),
    [(10.0, Cause.NOT_ATTACHABLE), (75.0, Cause.INFRASTRUCTURE_GONE)],
)
def test_an_online_worker_counts_as_alive_only_with_a_fresh_heartbeat(
    seconds_since_heartbeat: float, cause: Cause
) -> None:
    worker = WorkerInfo("w1", "ONLINE", "2026-11-27T10:01:00Z", seconds_since_heartbeat, 30.0)
    run = run_ref(workers=(worker,))
    verdict = diagnose(
        Evidence(run, Target(kind="process", description="no process of the run on this host"))
    )
    assert verdict.cause is cause, verdict.summary
    assert any(
        ("stale" if cause is Cause.INFRASTRUCTURE_GONE else "fresh") in line for line in verdict.evidence
    )


def with_open_control_channel(sample: ProcessSample) -> ProcessSample:
    """`sample` connected to its Runner's control channel (Prefect 3.9+), its listener thread waiting."""
    from prefect_cancel_doctor.model import SocketPeer, ThreadSample

    assert sample.proc is not None
    listener = ThreadSample(99, 99, "prefect-control-listener", False, False, ())
    proc = dataclasses.replace(
        sample.proc,
        control_port=41234,
        sockets=(SocketPeer(7, "127.0.0.1:50000", "127.0.0.1:41234", "ESTABLISHED"),),
    )
    dumps = (*sample.dumps[:-1], (*sample.dumps[-1], listener))
    return dataclasses.replace(sample, proc=proc, dumps=dumps)


def test_an_open_control_channel_says_no_cancel_was_sent() -> None:
    sample = process("sqlite_busy_native")
    open_channel = with_open_control_channel(sample)
    verdict = diagnose(evidence(open_channel))
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED
    assert any("control channel (127.0.0.1:41234) is open" in line for line in verdict.evidence)
    assert [finding.cause for finding in verdict.also] == [Cause.SIGNAL_PENDING]
    closed = dataclasses.replace(open_channel, dumps=sample.dumps)
    assert diagnose(evidence(closed)).cause is Cause.SIGNAL_PENDING


@pytest.mark.parametrize(
    ("workers", "confidence"),
    [
        ((WorkerInfo("w1", "OFFLINE", "2026-11-27T09:00:00Z", 4000.0),), 0.95),  # its claimer is down
        ((), 0.9),  # no worker of its pool is alive
        ((WorkerInfo("w1", "ONLINE", "2026-11-27T10:20:00Z", 3.0),), 0.75),  # its claimer may still submit it
    ],
)
def test_never_started_is_as_sure_as_its_claiming_worker_is_gone(
    workers: tuple[WorkerInfo, ...], confidence: float
) -> None:
    verdict = diagnose(evidence(run=run_ref(start_time=None, infrastructure_pid=None, workers=workers)))
    assert verdict.cause is Cause.NEVER_STARTED and verdict.confidence == confidence
    alive = any("it may still be submitting the run" in e for e in verdict.evidence)
    assert alive is (confidence == 0.75)


def test_a_run_launched_here_and_gone_from_every_process_here_is_gone_at_0_95() -> None:
    trace = "infrastructure_pid node-7:4242"
    assert diagnose(evidence(launched_here=trace)).confidence == 0.95
    assert diagnose(evidence()).confidence == 0.9  # its worker is known down, not known to be here
