"""`resolve` and `scan --resolve-orphans` on real stuck runs: one test per escalation path.

GIVEN runs stuck for real on a local server (an environment of this module's own:
these tests end the runs), WHEN `resolve` runs as a user runs it, THEN the plan names
the run's processes, each step is carried out and logged, everything is gone, and
only then is the run marked Cancelled, with a message read back from the API.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers import clean_environ, run_cli

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.environment import DemoEnvironment, StuckRun

pytestmark = pytest.mark.server

SCENARIOS = ["child", "gone", "sleep", "swallowed"]


@pytest.fixture(scope="module")
def environment() -> Iterator[DemoEnvironment]:
    from prefect_cancel_doctor.demo.environment import run_demo_environment

    def progress(message: str) -> None:
        sys.__stderr__.write(f"[resolve {time.strftime('%H:%M:%S')}] {message}\n")

    with run_demo_environment(SCENARIOS, progress) as staged:
        yield staged


def _env(environment: DemoEnvironment, tmp_path: Path) -> dict[str, str]:
    return clean_environ(
        PREFECT_API_URL=environment.harness.api_url,
        PREFECT_HOME=str(tmp_path / "home"),
        XDG_STATE_HOME=str(tmp_path / "state"),
    )


def _actions(tmp_path: Path) -> list[dict[str, Any]]:
    log = tmp_path / "state" / "prefect-cancel-doctor" / "actions.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


def _running(pid: int) -> bool:
    """Whether `pid` is alive (a zombie waiting for its parent to reap it is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


class _Screen:
    """A command running in a real pseudo-terminal, its output read as it comes."""

    def __init__(self, process: subprocess.Popen[bytes], master: int) -> None:
        self.process, self.master, self.text = process, master, ""

    def wait_for(self, *needles: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(n in self._plain() for n in needles):
            assert time.monotonic() < deadline, f"{needles} not on screen:\n{self._plain()[-3000:]}"
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if ready:
                try:
                    self.text += os.read(self.master, 65536).decode(errors="replace")
                except OSError:
                    break

    def _plain(self) -> str:
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.text)

    def interrupt(self) -> None:
        self.process.send_signal(signal.SIGINT)  # what Ctrl-C sends

    def exit_code(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            select.select([self.master], [], [], 0.2)
            with contextlib.suppress(OSError):
                os.read(self.master, 65536)
        return self.process.wait(1)


@contextlib.contextmanager
def _in_a_terminal(*args: str, env: dict[str, str]) -> Iterator[_Screen]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect_cancel_doctor", *args],
        env={**env, "TERM": "xterm-256color", "COLUMNS": "160"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    try:
        yield _Screen(process, master)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(master)


def _pids(run: StuckRun, environment: DemoEnvironment) -> list[int]:
    return environment.harness.run_processes(run.run_id)


def test_watch_without_a_terminal_prints_a_line_per_change(
    environment: DemoEnvironment, tmp_path: Path
) -> None:
    run = environment.run("sleep")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "prefect_cancel_doctor", "watch", "--every", "1"],
        env=_env(environment, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = watcher.stdout.readline() if watcher.stdout else ""
        assert run.run_name in first or any(r.run_name in first for r in environment.runs), first
        time.sleep(3)  # refreshes with nothing changed print nothing
    finally:
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 130, err
    assert "\x1b[" not in first + out
    assert environment.harness.state_type(run.run_id) == "CANCELLING"
    assert all(_proc_state(pid) not in ("T", "t") for pid in _pids(run, environment))


def test_no_terminal_and_no_yes_refuses_and_dry_run_changes_nothing(
    environment: DemoEnvironment, tmp_path: Path
) -> None:
    run = environment.run("sleep")
    env = _env(environment, tmp_path)
    before = (environment.harness.state_type(run.run_id), _pids(run, environment))
    refused = run_cli("resolve", run.run_id, env=env)  # stdin is not a terminal here
    assert refused.returncode == 2, refused.stderr
    assert "pass --yes" in refused.stderr
    dry = run_cli("resolve", run.run_id, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    # The plan is the command's output (`--dry-run > plan.txt` keeps it); what was done is on stderr.
    plan = dry.stdout.splitlines()
    assert plan[0] == f"plan for run {run.run_name} ({run.run_id}), cancel_not_observed:", dry.stdout
    assert plan[1].startswith("  1. SIGTERM ")
    # The run's processes are listed under the step that signals them, the first.
    listed = [line for line in plan if "(matched by PREFECT__FLOW_RUN_ID in its environment)" in line]
    assert listed and plan[2 : 2 + len(listed)] == listed, dry.stdout
    assert plan[2 + len(listed)].startswith("  2. verify"), dry.stdout
    assert "plan for run" not in dry.stderr and "SIGTERM" not in dry.stderr
    assert "dry run: nothing was done" in dry.stderr and "dry run" not in dry.stdout
    assert (environment.harness.state_type(run.run_id), _pids(run, environment)) == before
    assert before[1], "the run's process should still be there"
    assert not (tmp_path / "state" / "prefect-cancel-doctor" / "actions.jsonl").exists()


def test_declining_the_plan_in_a_terminal_does_nothing_and_exits_5(
    environment: DemoEnvironment, tmp_path: Path
) -> None:
    run = environment.run("sleep")
    env = _env(environment, tmp_path)
    before = (environment.harness.state_type(run.run_id), _pids(run, environment))
    with _in_a_terminal("resolve", run.run_id, env=env) as screen:
        screen.wait_for("Carry out this plan?")
        os.write(screen.master, b"n\n")
        screen.wait_for("declined: nothing was done")
        assert screen.exit_code(30) == 5
        text = screen._plain()
    assert "error:" not in text.lower(), text
    assert (environment.harness.state_type(run.run_id), _pids(run, environment)) == before
    assert not (tmp_path / "state" / "prefect-cancel-doctor" / "actions.jsonl").exists()


def test_ends_on_sigterm_then_marks_cancelled(environment: DemoEnvironment, tmp_path: Path) -> None:
    run = environment.run("sleep")
    pids = _pids(run, environment)
    done = run_cli("resolve", run.run_id, "--yes", env=_env(environment, tmp_path))
    assert done.returncode == 0, done.stderr
    # Off a terminal: what it waits for once, then how it ended (never the seconds left); then what
    # was verified.
    lines = done.stderr.splitlines()
    for number, line in enumerate(lines):
        if "(up to " in line:
            assert re.fullmatch(r"  exited (within 1 s|after \d+ s)", lines[number + 1]), done.stderr
    assert "s left" not in done.stderr
    assert re.search(r"^  verified: process(es)? [\d ]+ gone$", done.stderr, re.MULTILINE), done.stderr
    assert _pids(run, environment) == []
    state = environment.harness.read_run(run.run_id).state
    assert state is not None and state.type.value == "CANCELLED"
    assert (state.message or "").startswith("Cancelled by prefect-cancel-doctor resolve: SIGTERM")
    actions = _actions(tmp_path)
    assert [a["signal"] for a in actions] == ["SIGTERM"] * len(pids) + ["set Cancelled"]
    assert {a["run"] for a in actions} == {run.run_id} and all(a["user"] and a["host"] for a in actions)


def test_a_handler_that_returns_is_ended_by_sigkill_while_watched_in_a_terminal(
    environment: DemoEnvironment, tmp_path: Path
) -> None:
    run = environment.run("swallowed")  # its own SIGTERM handler returns: only SIGKILL ends it
    env = _env(environment, tmp_path)
    with _in_a_terminal("watch", run.run_id, "--every", "1", env=env) as screen:
        screen.wait_for(run.run_name, "signal_ignored", "sleep at stuck_swallowed.py")
        done = run_cli("resolve", run.run_id, "--yes", "--grace", "3", env=env)
        assert done.returncode == 0, done.stderr
        screen.wait_for("Cancelled at")
        flow_state = _proc_state(run.flow_pid) if run.flow_pid else None
        screen.interrupt()
        assert screen.exit_code(15) == 130
    assert flow_state in (None, "gone", "Z")  # Z: dead, not yet reaped by its parent
    signals = [a["signal"] for a in _actions(tmp_path)]
    # The doctor read the flow's own handler: no SIGTERM and no grace are wasted on it.
    assert signals[0] == "SIGKILL" and "SIGTERM" not in signals and signals[-1] == "set Cancelled"
    assert _pids(run, environment) == []
    assert environment.harness.state_type(run.run_id) == "CANCELLED"


def test_already_gone_only_sets_the_state(environment: DemoEnvironment, tmp_path: Path) -> None:
    run = environment.run("gone")
    done = run_cli("resolve", run.run_id, "--yes", env=_env(environment, tmp_path))
    assert done.returncode == 0, done.stderr
    assert [a["signal"] for a in _actions(tmp_path)] == ["set Cancelled"]
    message = environment.harness.read_run(run.run_id).state.message or ""
    assert message == "Cancelled by prefect-cancel-doctor resolve: nothing was left to stop"


def test_scan_resolve_orphans_ends_surviving_children(environment: DemoEnvironment, tmp_path: Path) -> None:
    run = environment.run("child")
    survivors = list(run.survivor_pids)
    assert survivors and all(_running(pid) for pid in survivors)
    done = run_cli("scan", "--format", "json", "--resolve-orphans", "--yes", env=_env(environment, tmp_path))
    assert done.returncode in (0, 1), done.stderr
    assert all(not _running(pid) for pid in survivors), done.stderr
    actions = _actions(tmp_path)
    assert {a["run"] for a in actions} == {run.run_id}
    assert "set Cancelled" not in [a["signal"] for a in actions]  # already final: left as it is
    assert environment.harness.state_type(run.run_id) == "CANCELLED"


def test_a_pid_reused_since_the_plan_is_refused_and_nothing_is_signalled(tmp_path: Path) -> None:
    from prefect_cancel_doctor.act.resolve import ActionLog, Plan, ProcessTarget, Refused, execute
    from prefect_cancel_doctor.model import Cause, Role
    from prefect_cancel_doctor.proc import procfs

    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        proc = procfs.read_process(sleeper.pid)
        assert proc is not None
        # The plan saw another process under this PID (another start time): a reuse.
        target = ProcessTarget(sleeper.pid, proc.start_time_ticks - 100, Role.ENGINE, "sleep 300", "test")
        plan = Plan("00000000-0000-0000-0000-000000000000", "reused", Cause.CANCEL_NOT_OBSERVED, (target,))
        with pytest.raises(Refused, match="PID reused"):
            execute(plan, api=None, log=ActionLog(tmp_path / "actions.jsonl"))  # type: ignore[arg-type]
        time.sleep(0.2)
        assert sleeper.poll() is None, "the reused PID was signalled"
        (entry,) = [json.loads(line) for line in (tmp_path / "actions.jsonl").read_text().splitlines()]
        assert entry["result"].startswith("refused")
    finally:
        sleeper.kill()
        sleeper.wait()
