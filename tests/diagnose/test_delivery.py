"""Delivery weighed on every sign: a SIGTERM that came and was absorbed is not read as none came.

Recorded dumps of real programs (tests/fixtures/programs/), with the interpreter's handler,
its pending flag, the pod, the container's events and the run's logs given per case.
"""

from __future__ import annotations

import dataclasses

from prefect_cancel_doctor.clients.prefect_records import LogLine
from prefect_cancel_doctor.diagnose.rules import Evidence, diagnose
from prefect_cancel_doctor.model import (
    Absorber,
    CallKind,
    Cause,
    CleanupClause,
    ContainerEvent,
    ContainerInfo,
    Delivered,
    HandlerKind,
    PodEventFact,
    PodFacts,
    ProcessSample,
    ProcSnapshot,
    SigtermHandler,
    SwallowingExcept,
    Target,
    WorkerInfo,
)
from tests.diagnose.test_rules import evidence, process, program_line, run_ref, with_open_control_channel
from tests.helpers import proc_snapshot

PREFECT = SigtermHandler(
    HandlerKind.PREFECT, "_prefect_sigterm_handler", "/venv/prefect/utilities/engine.py", 97
)
OWN = SigtermHandler(HandlerKind.OTHER, "on_term", "/flows/etl.py", 12)
LOOP = SwallowingExcept("/flows/etl.py", 41, "except BaseException as exc:", "BaseException", "etl", 39, 37)


def sleeping(handler: SigtermHandler | None = PREFECT, **changes: object) -> ProcessSample:
    return dataclasses.replace(
        process("sleep_main_native"),
        sigterm_handler=handler,
        sigterm_pending=False,
        **changes,  # type: ignore[arg-type]
    )


def in_pid1(sample: ProcessSample) -> ProcessSample:
    assert sample.proc is not None
    return dataclasses.replace(sample, proc=dataclasses.replace(sample.proc, ns_pid=1))


def terminating_pod() -> PodFacts:
    return PodFacts(
        namespace="prefect",
        job="brave-otter-x7",
        name="brave-otter-x7-abcde",
        deletion_timestamp="2026-11-27T10:05:02Z",
        running=True,
        events=(PodEventFact("Normal", "Killing", "Stopping container prefect-job"),),
    )


def in_pod(sample: ProcessSample, pod: PodFacts) -> Evidence:
    target = Target(kind="kubernetes", description="pod", processes=(sample,), pod=pod)
    return Evidence(run_ref(), target, logs_read=True)


def test_a_handler_that_returns_in_a_terminating_pod_is_a_sigterm_absorbed_not_none_came() -> None:
    verdict = diagnose(in_pod(in_pid1(sleeping(OWN)), terminating_pod()))
    assert verdict.cause is Cause.SIGNAL_IGNORED, verdict.summary
    assert verdict.summary.startswith("A SIGTERM came and the flow's own handler on_term at /flows/etl.py:12")
    assert verdict.confidence >= 0.9
    assert verdict.delivery is not None
    assert verdict.delivery.sigterm is Delivered.YES
    assert verdict.delivery.absorbed_by is Absorber.HANDLER_RETURNS
    assert any("Terminating" in sign for sign in verdict.delivery.signs_for)
    assert any("Killing: Stopping container" in sign for sign in verdict.delivery.signs_for)
    assert (verdict.stop_now and "kubectl" in verdict.stop_now[0]) or "kill -KILL" in " ".join(
        verdict.stop_now
    )


def test_a_sigterm_to_pid1_that_is_not_the_flow_process_is_no_sign_for_it() -> None:
    verdict = diagnose(in_pod(sleeping(PREFECT), terminating_pod()))  # the engine is not PID 1
    assert verdict.delivery is not None and not verdict.delivery.signs_for


def test_a_handler_that_returns_with_no_sign_either_way_still_leads_with_what_absorbs_it() -> None:
    verdict = diagnose(evidence(sleeping(OWN), logs_read=True))
    assert verdict.cause is Cause.SIGNAL_IGNORED
    assert verdict.delivery is not None and verdict.delivery.sigterm is Delivered.UNKNOWN
    assert 0.8 <= verdict.confidence < 0.9
    assert any("not Prefect's" in line for line in verdict.evidence)


def test_a_handler_that_returns_but_an_open_control_channel_says_none_came_yet() -> None:
    verdict = diagnose(evidence(with_open_control_channel(sleeping(OWN)), logs_read=True))
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED
    assert [later.cause for later in verdict.also] == [Cause.SIGNAL_IGNORED]
    assert verdict.also[0].summary.startswith("Once a SIGTERM comes, the flow's own handler on_term")


def test_an_except_that_swallows_termination_named_with_the_flows_own_log_line() -> None:
    logs = (
        LogLine("2026-11-27T10:04:00Z", 20, "processing item 17"),
        LogLine("2026-11-27T10:05:01Z", 40, "item 18 failed: TerminationSignal(15), going on"),
    )
    ev = dataclasses.replace(evidence(sleeping(PREFECT, swallowing=(LOOP,))), logs=logs, logs_read=True)
    verdict = diagnose(ev)
    assert verdict.cause is Cause.SIGNAL_IGNORED, verdict.summary
    assert "the `except` at /flows/etl.py:41" in verdict.summary
    assert "the loop at line 37 goes on" in verdict.summary
    assert verdict.confidence >= 0.9
    assert verdict.delivery is not None and verdict.delivery.absorbed_by is Absorber.EXCEPTION_SWALLOWED
    assert any("TerminationSignal(15)" in sign and "10:05:01" in sign for sign in verdict.delivery.signs_for)
    assert any("catch Exception, not BaseException" in fix for fix in verdict.remediation)
    assert verdict.blocking_call is not None and verdict.blocking_call.kind is CallKind.SLEEP


def test_prefects_own_cancelled_line_from_the_flow_process_is_a_sign_a_sigterm_came() -> None:
    """Prefect 3.9's engine logs it in the flow process once the Runner's SIGTERM raised there."""
    logs = (LogLine("2026-11-27T10:05:02Z", 20, "Flow run was cancelled."),)
    ev = dataclasses.replace(evidence(sleeping(PREFECT)), logs=logs, logs_read=True)
    verdict = diagnose(ev)
    assert verdict.delivery is not None and verdict.delivery.sigterm is Delivered.YES
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED and verdict.confidence < 0.5, verdict.summary
    # The Runner's own words for the run's state are no sign of what reached the process.
    runner = (LogLine("2026-11-27T10:05:02Z", 20, "Flow run was cancelled successfully."),)
    quiet = diagnose(dataclasses.replace(evidence(sleeping(PREFECT)), logs=runner, logs_read=True))
    assert quiet.delivery is not None and quiet.delivery.sigterm is not Delivered.YES


def test_a_log_line_before_the_cancel_is_no_sign() -> None:
    logs = (LogLine("2026-11-27T10:00:01Z", 40, "TerminationSignal while warming up"),)
    ev = dataclasses.replace(evidence(sleeping(PREFECT, swallowing=(LOOP,))), logs=logs, logs_read=True)
    verdict = diagnose(ev)
    assert verdict.delivery is not None and not verdict.delivery.signs_for
    assert verdict.cause is Cause.SIGNAL_IGNORED and verdict.confidence < 0.8


def test_a_thread_holding_the_gil_starves_the_handler_of_a_sigterm_that_came() -> None:
    engine = dataclasses.replace(process("gil_held_native", state="R"), sigterm_pending=True)
    verdict = diagnose(evidence(engine, logs_read=True))
    assert verdict.cause is Cause.SIGNAL_PENDING, verdict.summary
    call = verdict.blocking_call
    assert call is not None and call.thread_name == "ThreadPoolExecutor-0_0"
    assert (call.filename or "").endswith("gil_held.py")
    assert call.line == program_line("gil_held.py", "# blocks here")
    assert "holds the GIL" in verdict.summary
    assert verdict.delivery is not None and verdict.delivery.absorbed_by is Absorber.GIL_HELD


def test_the_same_wait_without_a_pending_sigterm_is_not_read_as_a_gil_problem() -> None:
    engine = dataclasses.replace(process("gil_held_native"), sigterm_pending=False)
    assert diagnose(evidence(engine, logs_read=True)).cause is not Cause.SIGNAL_PENDING


def killed_container(sample: ProcessSample) -> Evidence:
    """`sample` in a running container that the Docker engine sent `kill` (signal 15) after the cancel."""
    container = ContainerInfo(
        id="c" * 64,
        name="brave-otter",
        status="running",
        running=True,
        events=(ContainerEvent("2026-11-27T10:05:03Z", "kill", "15"),),
    )
    target = Target(kind="docker", description="container", processes=(sample,), container=container)
    return Evidence(run_ref(), target, logs_read=True)


def test_no_sigterm_came_drops_below_half_when_a_docker_kill_to_the_flow_says_otherwise() -> None:
    sample = in_pid1(sleeping(PREFECT))
    verdict = diagnose(killed_container(sample))
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED
    assert verdict.confidence < 0.5
    assert any(
        line.startswith("conflicts with 'no SIGTERM came'") and "kill" in line for line in verdict.evidence
    )
    assert "uncertain" in verdict.summary


#: The main thread runs a `finally` of the flow's own, as it would while unwinding from a SIGTERM.
CLEANUP = CleanupClause("/flows/etl.py", 44, "finally:", "finally", "etl", 45)


def test_a_sigterm_that_came_to_a_flow_in_its_finally_is_held_by_the_cleanup_not_none_came() -> None:
    verdict = diagnose(killed_container(in_pid1(sleeping(PREFECT, cleanup=(CLEANUP,)))))
    assert verdict.cause is Cause.SIGNAL_IGNORED and verdict.confidence >= 0.9, verdict.summary
    assert verdict.summary.startswith("A SIGTERM came and the flow is unwinding through the `finally` at ")
    assert verdict.delivery is not None and verdict.delivery.absorbed_by is Absorber.CLEANUP_BLOCKS
    assert verdict.short_fix == "bound the cleanup with a timeout"


def test_a_flow_in_its_finally_with_no_sign_either_way_is_no_confident_none_came() -> None:
    """Prefect's handler and a call a signal interrupts say "a SIGTERM would have unwound the flow",
    unless the flow is in cleanup a SIGTERM's unwinding runs: then it may have come already."""
    verdict = diagnose(evidence(sleeping(PREFECT, cleanup=(CLEANUP,)), logs_read=True))
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED and verdict.confidence <= 0.5, verdict.summary
    assert verdict.summary.startswith("No sign says whether a SIGTERM reached the flow process")
    assert verdict.delivery is not None and verdict.delivery.sigterm is Delivered.UNKNOWN
    assert [(later.cause, later.confidence) for later in verdict.also] == [(Cause.SIGNAL_IGNORED, 0.5)]
    # The same flow outside its cleanup: Prefect's handler would have ended it, so none came.
    plain = diagnose(evidence(sleeping(PREFECT), logs_read=True))
    assert plain.cause is Cause.CANCEL_NOT_OBSERVED and plain.confidence >= 0.8


def test_a_flow_in_its_finally_behind_a_worker_that_died_before_the_cancel_got_none() -> None:
    worker = WorkerInfo("w1", "OFFLINE", "2026-11-27T10:04:00Z", 960.0, 30.0)
    sample = sleeping(PREFECT, cleanup=(CLEANUP,))
    verdict = diagnose(evidence(sample, run=run_ref(workers=(worker,)), logs_read=True))
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED and verdict.confidence >= 0.8
    assert verdict.delivery is not None and verdict.delivery.sigterm is Delivered.NO


def test_a_sigterm_that_came_to_a_flow_whose_handler_cannot_be_read_is_absorbed_not_none_came() -> None:
    # A sidecar whose probe could not run: the handler is unread, the Docker engine's `kill` says a
    # SIGTERM reached the flow (PID 1), and the flow sleeps on in a call a signal interrupts.
    sample = in_pid1(sleeping(None))
    verdict = diagnose(killed_container(sample))
    assert verdict.cause is Cause.SIGNAL_IGNORED
    assert verdict.summary.startswith("A SIGTERM came and the flow process")
    assert 0.5 <= verdict.confidence < 0.8
    assert any("kill" in line and line.startswith("a sign that a SIGTERM came") for line in verdict.evidence)
    assert any("handler" in line and line.startswith("not read here") for line in verdict.evidence)
    assert verdict.stop_now and verdict.stop_now[0].startswith("docker kill ")


def test_heartbeats_are_intervals_a_worker_may_have_died_after_the_cancel() -> None:
    # Last heartbeat 5 s before the cancel, every 30 s: the next was due within 30 x 1.3 + 5 = 44 s
    # (Prefect jitters the interval), so it stopped between 5 s before and 39 s after the cancel.
    worker = WorkerInfo("w1", "OFFLINE", "2026-11-27T10:04:55Z", 905.0, 30.0)
    verdict = diagnose(evidence(sleeping(None), run=run_ref(workers=(worker,)), logs_read=True))
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED
    assert not any("stopped before the cancel" in line for line in verdict.evidence)
    assert any("between 5.0s before and 39s after the cancel" in line for line in verdict.evidence), (
        verdict.evidence
    )
    assert verdict.confidence <= 0.6
    # Prefect's handler read, nothing catches it: a SIGTERM would have unwound the flow: none came.
    sure = diagnose(evidence(sleeping(PREFECT), run=run_ref(workers=(worker,)), logs_read=True))
    assert sure.cause is Cause.CANCEL_NOT_OBSERVED and sure.confidence >= 0.8
    assert sure.delivery is not None and sure.delivery.sigterm is Delivered.NO


def test_a_heartbeat_late_within_prefects_jitter_is_no_proof_the_worker_died_before_the_cancel() -> None:
    """Prefect's worker sleeps 0.7-1.3 intervals between heartbeats: 35 s after its last one (every
    30 s), a live worker may not have sent the next yet, seen the cancel, signalled and then died."""
    worker = WorkerInfo("w1", "OFFLINE", "2026-11-27T10:04:25Z", 935.0, 30.0)
    verdict = diagnose(evidence(sleeping(OWN), run=run_ref(workers=(worker,)), logs_read=True))
    assert verdict.cause is Cause.SIGNAL_IGNORED, verdict.summary
    assert verdict.delivery is not None and verdict.delivery.sigterm is Delivered.UNKNOWN
    assert not any("stopped before the cancel" in line for line in verdict.evidence), verdict.evidence


def test_a_worker_whose_next_heartbeat_was_due_before_the_cancel_stopped_before_it() -> None:
    worker = WorkerInfo("w1", "OFFLINE", "2026-11-27T10:04:00Z", 960.0, 30.0)
    verdict = diagnose(evidence(sleeping(PREFECT), run=run_ref(workers=(worker,)), logs_read=True))
    assert any("stopped before the cancel" in line for line in verdict.evidence)


def test_a_handler_that_returns_behind_a_worker_that_died_before_the_cancel_comes_second() -> None:
    """The flow's own handler would absorb a SIGTERM, but the heartbeats prove none was sent (the
    demo's `swallowed` run when its kill and its cancel are a heartbeat apart, on a loaded host)."""
    worker = WorkerInfo("w1", "OFFLINE", "2026-11-27T10:04:00Z", 960.0, 30.0)
    verdict = diagnose(evidence(sleeping(OWN), run=run_ref(workers=(worker,)), logs_read=True))
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED and verdict.confidence >= 0.8
    assert verdict.delivery is not None and verdict.delivery.sigterm is Delivered.NO
    assert [later.cause for later in verdict.also] == [Cause.SIGNAL_IGNORED]
    stopped = [line for line in verdict.evidence if "stopped before the cancel" in line]
    assert len(stopped) == 1, verdict.evidence


def test_an_adopting_subreaper_is_named_as_what_it_is_not_as_the_runner() -> None:
    adopter = proc_snapshot(900, ("/usr/bin/python3", "/usr/bin/supervisord", "-n"), comm="supervisord")
    sample = sleeping(PREFECT)
    assert sample.proc is not None
    sample = dataclasses.replace(sample, proc=dataclasses.replace(sample.proc, ppid=900))
    verdict = diagnose(evidence(sample, logs_read=True, adopter=adopter))
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED
    assert not any("Runner that launched it is alive" in line for line in verdict.evidence)
    assert any(
        "process 900 (`/usr/bin/python3 /usr/bin/supervisord -n`)" in line and "subreaper" in line
        for line in verdict.evidence
    )


def test_the_probes_output_is_untrusted_input() -> None:
    # What a hostile image's `python` could print in place of the probe's JSON.
    from prefect_cancel_doctor.sample.handler import parse_probe

    assert parse_probe("") is None
    assert parse_probe("not json at all") is None
    assert parse_probe("[1, 2]") is None
    hostile = (
        '{"pid": 7, "pending": "yes", "handler": {"kind": "other", "qualname": "\\u001b]52;c;aGk=\\u0007x",'
        ' "filename": 5, "line": "12"}, "sources": {"/a.py": "x = 1", "/b.py": 7}}'
    )
    probe = parse_probe(hostile)
    assert probe is not None
    assert probe.pending is None  # not a bool
    assert probe.handler is not None and probe.handler.kind is HandlerKind.OTHER
    assert probe.handler.qualname is not None and "\x1b" not in probe.handler.qualname
    assert probe.handler.filename is None and probe.handler.line is None
    assert dict(probe.sources) == {"/a.py": "x = 1"}
    assert parse_probe('{"handler": {"kind": "root-shell"}}') == parse_probe("{}")


def test_the_delivery_judgement_is_shown_with_its_signs_in_the_panel_and_in_markdown() -> None:
    import io

    from prefect_cancel_doctor.model import Diagnosis, Report
    from prefect_cancel_doctor.render import Format, render

    ev = in_pod(in_pid1(sleeping(OWN)), terminating_pod())
    report = Report(
        "http://127.0.0.1:4200/api",
        "2026-11-27T12:00:00+00:00",
        (Diagnosis(ev.run, ev.target, diagnose(ev)),),
    )
    for fmt in (Format.TERMINAL, Format.MARKDOWN):
        out = io.StringIO()
        render(report, fmt, out, color=False)
        text = " ".join(out.getvalue().split()).replace("\\_", "_")
        assert (
            "Did a SIGTERM come? yes: a SIGTERM handler of the flow's own returned (handler_returns)" in text
        )
        assert "yes: pod brave-otter-x7-abcde is Terminating since" in text
        assert "yes: the kubelet's event Killing: Stopping container prefect-job" in text


def test_an_init_that_ran_the_worker_and_adopted_the_flow_is_named_as_an_init() -> None:
    from prefect_cancel_doctor.diagnose.unsent import _runner_gone_fact

    sample = sleeping(PREFECT)
    assert sample.proc is not None
    tini = dataclasses.replace(
        sample.proc,
        pid=40,
        comm="tini",
        cmdline=("tini", "-s", "--", "prefect", "worker", "start", "--pool", "p"),
    )
    assert isinstance(tini, ProcSnapshot)
    ev = dataclasses.replace(evidence(sample), adopter=tini)
    fact = _runner_gone_fact(ev, sample)
    assert "an init or supervisor, not the Runner itself" in fact and "subreaper" in fact
    assert "no worker" not in fact


def test_a_main_thread_that_has_left_the_flow_is_no_sign_that_no_sigterm_came() -> None:
    # The flow unwound (as Prefect's handler makes it on SIGTERM) and the main thread waits in
    # shutdown for a non-daemon thread: "a SIGTERM would have ended it" does not hold there.
    kernel = {6107: ("S", "futex_wait_queue", "futex")}
    sample = dataclasses.replace(process("thread_sleep_native", kernel=kernel), sigterm_handler=PREFECT)
    verdict = diagnose(evidence(sample, logs_read=True))
    assert verdict.cause is Cause.EXIT_BLOCKED_BY_THREAD
    assert verdict.delivery is not None and verdict.delivery.sigterm is not Delivered.NO
    assert not any("would have unwound the flow" in sign for sign in verdict.delivery.signs_against)
