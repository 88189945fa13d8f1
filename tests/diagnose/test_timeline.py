"""A run's timeline: dated facts from its state history, worker, processes and logs, oldest first."""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timezone
from pathlib import Path

from prefect_cancel_doctor.clients.prefect_records import LogLine, State
from prefect_cancel_doctor.diagnose.rules import diagnose
from prefect_cancel_doctor.diagnose.timeline import build
from prefect_cancel_doctor.model import Cause, StateType, TimelineSource, WorkerInfo
from tests.diagnose.test_rules import evidence, process, run_ref


def test_facts_from_every_source_in_order(tmp_path: Path) -> None:
    boot = datetime(2026, 11, 29, 23, 58, 0, tzinfo=timezone.utc)
    (tmp_path / "stat").write_text(f"cpu 1 2 3\nbtime {int(boot.timestamp())}\n")
    engine = process("sleep_main_native")
    assert engine.proc is not None
    engine = dataclasses.replace(
        engine, proc=dataclasses.replace(engine.proc, start_time_ticks=100 * os.sysconf("SC_CLK_TCK"))
    )
    history = [
        State(StateType.RUNNING, "Running", timestamp="2026-11-30T00:00:10.5Z"),
        State(StateType.CANCELLING, "Cancelling", "requested by a user", "2026-11-30T00:05:00Z"),
    ]
    logs = [
        LogLine("2026-11-30T00:01:00Z", 20, "Downloading data"),
        LogLine("2026-11-30T00:05:01Z", 20, "Received SIGTERM\\nmore"),
        LogLine("2026-11-30T00:06:00Z", 40, "Something failed"),
    ]
    entries = build(run_ref(), history, logs, [engine], None, tmp_path)
    assert [e.at for e in entries] == sorted(e.at for e in entries)
    assert [(e.source, e.what) for e in entries] == [
        (TimelineSource.WORKER, "worker w1 last heartbeat, status OFFLINE (none since: stale)"),
        (TimelineSource.PROCESS, f"engine process {engine.pid} started"),
        (TimelineSource.STATE, "entered Running"),
        (TimelineSource.STATE, "entered Cancelling: requested by a user"),
        (TimelineSource.LOG, "log: Received SIGTERM\\nmore"),
        (TimelineSource.LOG, "log: Something failed"),
    ]
    assert entries[1].at == "2026-11-29T23:59:40Z"  # boot + 100 s of clock ticks
    assert entries[2].at == "2026-11-30T00:00:10Z"  # to the second, in UTC


def _step_logs(*messages: str) -> list[str]:
    logs = [LogLine(f"2026-11-30T00:0{i}:00Z", 20, m) for i, m in enumerate(messages)]
    return [e.what for e in build(None, (), logs, (), None, "/nonexistent")]


def test_deployment_steps_show_only_the_one_a_run_is_still_in() -> None:
    prepared = _step_logs(
        "Executing deployment step: set_working_directory",
        "Executing deployment step: pip_install_requirements",
        "All deployment steps completed successfully",
        "Received SIGTERM",
    )
    assert prepared == ["log: Received SIGTERM"]
    preparing = _step_logs(
        "Executing deployment step: set_working_directory",
        "Executing deployment step: git_clone",
        "Cancel requested",
    )
    assert preparing == ["log: Executing deployment step: git_clone", "log: Cancel requested"]


def test_a_worker_that_stopped_before_the_cancel_is_said_so() -> None:
    # Cancelling for 900 s; last heartbeat 960 s ago: 60 s before the cancel.
    worker = WorkerInfo("w1", "ONLINE", "2026-11-27T10:04:00Z", 960.0, 30.0)
    verdict = diagnose(evidence(process("sleep_main_native"), run=run_ref(workers=(worker,))))
    assert verdict.cause is Cause.CANCEL_NOT_OBSERVED
    assert any("60s before the run entered Cancelling" in line for line in verdict.evidence)
