"""A partial view is never acted on as if it were whole.

A doctor that is not root cannot read other users' processes: their PREFECT__FLOW_RUN_ID is
closed to it. When it finds nothing of a run among what it can read, the run may still run
in a process it cannot: the verdict must not be `infrastructure_gone`, and `resolve` must not
mark the run Cancelled ("nothing was left to stop") unless told to (`--force-state`), and
that told on its own.

GIVEN a run in Cancelling whose `infrastructure_pid` is stale while its real flow engine, a
root process started with the run's id, still runs, WHEN an ordinary user (`nobody`)
diagnoses and resolves it, THEN the verdict says the view is partial and names the engine
among the processes it could not read, `resolve` exits 2 with the state and the engine left
as they were, and only `--force-state`, confirmed by its own question (or by the flag with
`--yes`), sets the state, saying so in the state's message and in the action log.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.helpers import clean_environ, run_cli

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.environment import DemoEnvironment

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or os.geteuid() != 0,
        reason="needs root: a root-owned flow engine, and the doctor run as nobody",
    ),
]

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


@dataclass(frozen=True)
class HiddenRun:
    """A run in Cancelling whose engine (root's) runs while its infrastructure_pid is stale."""

    run_id: str
    engine_pid: int
    stale_pid: int
    #: nobody's home and state directory.
    home: Path


@pytest.fixture(scope="module")
def hidden_run(demo_environment: DemoEnvironment) -> Iterator[HiddenRun]:
    harness = demo_environment.harness
    home = Path(tempfile.mkdtemp(prefix="pcd-partial-"))
    os.chmod(home, 0o755)
    (home / "nobody").mkdir()
    os.chown(home / "nobody", NOBODY, NOBODY)
    ready = home / "ready"
    # The staged `sleep` deployment, run by a real `python -m prefect.engine` of root's, as a
    # worker would start it; no worker serves its pool any more (the staging killed it).
    run_id = harness.create_run(demo_environment.run("sleep").deployment_id, {"ready_path": str(ready)})
    log = (home / "engine.log").open("wb")
    engine = subprocess.Popen(
        [sys.executable, "-m", "prefect.engine"],
        env=harness.child_env({"PREFECT__FLOW_RUN_ID": run_id}),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=home,
    )
    try:
        deadline = time.monotonic() + 180
        while not ready.exists():
            assert engine.poll() is None, (home / "engine.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the engine never reached its blocking line"
            time.sleep(0.2)
        harness.wait_for_state(run_id, ["RUNNING"], timeout=60)
        harness.cancel_run(run_id)
        # A PID that was a process and is no more: the run's infrastructure_pid went stale.
        gone = subprocess.Popen(["true"])
        gone.wait()
        harness.client.update_flow_run(uuid.UUID(run_id), infrastructure_pid=str(gone.pid))
        assert harness.state_type(run_id) == "CANCELLING"
        yield HiddenRun(run_id, engine.pid, gone.pid, home / "nobody")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(engine.pid, signal.SIGKILL)
        engine.wait(timeout=30)
        log.close()
        with contextlib.suppress(Exception):
            harness.force_state(run_id, "CANCELLED", "test over")
        shutil.rmtree(home, ignore_errors=True)


def _env(environment: DemoEnvironment, home: Path) -> dict[str, str]:
    return clean_environ(
        PREFECT_API_URL=environment.api_url,
        PREFECT_HOME=str(home),
        HOME=str(home),
        XDG_STATE_HOME=str(home / "state"),
    )


def _as_nobody(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [*AS_NOBODY, sys.executable, "-m", "prefect_cancel_doctor", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=300, cwd="/", stdin=subprocess.DEVNULL
    )


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _names(pid: int, text: str) -> bool:
    """Whether `text` names process `pid` among those it could not read."""
    return re.search(rf"partial view: .*\b{pid}\b", text) is not None


def _actions(home: Path) -> list[dict[str, Any]]:
    log = home / "state" / "prefect-cancel-doctor" / "actions.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_a_partial_view_is_never_taken_for_a_gone_run(
    demo_environment: DemoEnvironment, hidden_run: HiddenRun, tmp_path: Path
) -> None:
    env = _env(demo_environment, hidden_run.home)
    harness = demo_environment.harness

    # WHEN nobody diagnoses the run
    done = _as_nobody("diagnose", hidden_run.run_id, "--samples", "1", "--format", "json", env=env)
    assert done.returncode == 1, done.stderr[-2000:]
    (entry,) = json.loads(done.stdout)["runs"]
    verdict = entry["verdict"]
    # THEN it does not say the run is gone: it says what it could not read, the engine first
    assert verdict["cause"] == "not_attachable", verdict["summary"]
    assert verdict["summary"].startswith("partial view:"), verdict["summary"]
    assert _names(hidden_run.engine_pid, verdict["summary"]) and "prefect.engine" in verdict["summary"]
    assert "sudo -E" in verdict["summary"] and "the user that runs the flow" in verdict["summary"]
    assert f"infrastructure_pid {hidden_run.stale_pid} no longer exists" in json.dumps(verdict["evidence"])

    # WHEN nobody resolves it, as the user did, and without a terminal with --force-state alone
    for args in (("--yes",), ("--force-state",), ("--dry-run",)):
        done = _as_nobody("resolve", hidden_run.run_id, *args, env=env)
        # THEN it refuses (exit 2), names the processes it could not read and how to get the right
        assert done.returncode == 2, (args, done.stderr[-2000:])
        said = done.stdout + done.stderr  # the plan on stdout, the refusal on stderr
        assert _names(hidden_run.engine_pid, said), (args, said[-2000:])
        assert "sudo -E" in said and "--force-state" in said, (args, said[-2000:])
        assert "state set to" not in said
        # and the state and the engine are as they were
        assert harness.state_type(hidden_run.run_id) == "CANCELLING", args
        assert _alive(hidden_run.engine_pid), args
    assert _actions(hidden_run.home) == []

    # Root, who may read every process, finds the engine by its PREFECT__FLOW_RUN_ID.
    as_root = _env(demo_environment, tmp_path)
    done = run_cli("diagnose", hidden_run.run_id, "--samples", "1", "--format", "json", env=as_root)
    (entry,) = json.loads(done.stdout)["runs"]
    assert entry["target"]["pid"] == hidden_run.engine_pid, entry["verdict"]["summary"]
    assert entry["verdict"]["cause"] not in ("infrastructure_gone", "not_attachable")


class _Terminal:
    """A command in a real pseudo-terminal, its output read as it comes."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(command, env=env, stdin=slave, stdout=slave, stderr=slave, cwd="/")
        os.close(slave)
        self.text = ""

    def answer(self, question: str, reply: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while question not in self.text:
            assert self.process.poll() is None or select.select([self.master], [], [], 0)[0], self.text[
                -3000:
            ]
            assert time.monotonic() < deadline, f"{question!r} never asked:\n{self.text[-3000:]}"
            if select.select([self.master], [], [], 0.5)[0]:
                try:
                    self.text += os.read(self.master, 65536).decode(errors="replace")
                except OSError:
                    break
        os.write(self.master, reply.encode() + b"\r")

    def exit_code(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):
                    self.text += os.read(self.master, 65536).decode(errors="replace")
        code = self.process.wait(5)
        os.close(self.master)
        return code


def test_force_state_is_confirmed_on_its_own_and_said(
    demo_environment: DemoEnvironment, hidden_run: HiddenRun
) -> None:
    env = {**_env(demo_environment, hidden_run.home), "TERM": "dumb", "COLUMNS": "160"}
    harness = demo_environment.harness
    command = [*AS_NOBODY, sys.executable, "-m", "prefect_cancel_doctor", "resolve", hidden_run.run_id]

    # WHEN nobody says yes to the plan and no to the question of its own --force-state asks
    terminal = _Terminal([*command, "--force-state"], env)
    terminal.answer("Carry out this plan?", "y")
    terminal.answer("Set the state to Cancelled anyway?", "n")
    # THEN nothing is done, and declining is said as such (exit 5), no error
    assert terminal.exit_code() == 5, terminal.text[-3000:]
    assert "--force-state declined: nothing was done" in terminal.text and "error:" not in terminal.text
    assert harness.state_type(hidden_run.run_id) == "CANCELLING"
    assert _actions(hidden_run.home) == []

    # WHEN --force-state comes with --yes: both are said on the command line
    done = _as_nobody("resolve", hidden_run.run_id, "--force-state", "--yes", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    # THEN the plan says what forcing means, the state is set and says how, and so does the log
    assert "although this doctor cannot read every process here (--force-state)" in done.stdout  # the plan
    assert _names(hidden_run.engine_pid, done.stdout + done.stderr)
    run = harness.read_run(hidden_run.run_id)
    assert run.state is not None and run.state.type.value == "CANCELLED"
    assert "--force-state, on a partial view" in (run.state.message or "")
    (action,) = _actions(hidden_run.home)
    assert action["signal"] == "set Cancelled (--force-state on a partial view)", action
    # The engine the doctor could not see was not touched: forcing the state is all it did.
    assert _alive(hidden_run.engine_pid)


def test_the_autopilot_on_a_partial_view_acts_on_nothing_and_says_why(
    demo_environment: DemoEnvironment, hidden_run: HiddenRun
) -> None:
    """GIVEN a run marked Cancelled whose child, nobody's own process, still runs (a cause the `safe`
    policy acts on, on a process the doctor can read), WHEN nobody's agent runs one autopilot cycle,
    THEN nothing is signalled or changed, and the refusal, a partial view, is published as an event."""
    harness = demo_environment.harness
    env = _env(demo_environment, hidden_run.home)
    run_id = harness.create_run(demo_environment.run("sleep").deployment_id, {"ready_path": "/nonexistent"})
    harness.force_state(run_id, "CANCELLED", "cancelled; its child runs on")
    child = subprocess.Popen(
        [*AS_NOBODY, sys.executable, "-c", "import time; time.sleep(600)"],
        env={**os.environ, "PREFECT__FLOW_RUN_ID": run_id},
        start_new_session=True,
    )
    since = datetime.now(timezone.utc)
    try:
        done = _as_nobody("agent", "--once", "--autopilot", "safe", "--host", "partial-host", env=env)

        # exit 1: runs need attention (as `scan`); the agent's log says why it left the run to people
        assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
        assert "(child_process_survives): left to people (partial_view)" in done.stderr, done.stderr[-2000:]
        assert _alive(child.pid) and harness.state_type(run_id) == "CANCELLED"
        refusal = _refusal_of(demo_environment.api_url, run_id, since)
        assert refusal["resource"]["prefect-cancel-doctor.refusal"] == "partial_view", refusal
        assert refusal["payload"]["cause"] == "child_process_survives"
        assert [a for a in _actions(hidden_run.home) if a.get("run") == run_id] == []  # nothing done to it
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)


def _refusal_of(api_url: str, run_id: str, since: datetime) -> dict[str, Any]:
    """The autopilot's refusal event for the run, read back from the server."""
    body = {
        "filter": {
            "occurred": {"since": since.isoformat(), "until": "2100-01-01T00:00:00+00:00"},
            "event": {"name": ["prefect-cancel-doctor.resolve-refused"]},
            "related": {"id": [f"prefect.flow-run.{run_id}"]},
        },
        "limit": 5,
    }
    deadline = time.monotonic() + 60
    while True:
        events = httpx.post(f"{api_url}/events/filter", json=body, timeout=30).json()["events"]
        if events or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    (event,) = events
    return dict(event)
