"""Guarantees on real stuck runs (the session's staged server, `demo_environment`).

- Read-only: `scan`, `diagnose`, `inspect` and `report` change no run's state and
  signal no process.
- Partial permissions are said, not guessed: an unprivileged user scanning
  root-owned stuck runs gets `not_attachable` with the right it lacks, and a
  scan marked partial — never `infrastructure_gone`.
- The doctor killed mid-sample (SIGINT, SIGTERM, SIGKILL) leaves no target
  stopped and no py-spy behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from prefect_cancel_doctor.proc import procfs
from prefect_cancel_doctor.render.terminal import SHOWN
from prefect_cancel_doctor.sample.pyspy import find_py_spy
from tests.helpers import clean_environ

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.environment import DemoEnvironment

pytestmark = pytest.mark.server

NOBODY = 65534


def _doctor(*args: str, env: dict[str, str], user: int | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "prefect_cancel_doctor", *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd="/")


def _run_states(environment: DemoEnvironment) -> dict[str, tuple[object, ...]]:
    runs = environment.harness.read_runs(run.run_id for run in environment.runs)
    return {
        run_id: (run.state_type, run.state.timestamp if run.state else None, run.updated)
        for run_id, run in runs.items()
    }


def _processes(environment: DemoEnvironment) -> dict[int, tuple[int, str, int, int]]:
    """Every live process of the staged runs: start time, state and pending signal sets."""
    pids = [pid for run in environment.runs for pid in (run.flow_pid, *run.survivor_pids) if pid]
    found = {}
    for pid in pids:
        snap = procfs.read_process(pid, read_sockets=False)
        if snap is not None:
            found[pid] = (snap.start_time_ticks, snap.state, snap.sig_pending, snap.shared_pending)
    return found


def test_every_command_is_read_only(demo_environment: DemoEnvironment, tmp_path: Path) -> None:
    env = clean_environ(PREFECT_API_URL=demo_environment.api_url, PREFECT_HOME=str(tmp_path))
    states, processes = _run_states(demo_environment), _processes(demo_environment)
    assert processes, "no live staged process to watch"
    some = demo_environment.run("sleep")
    commands = [
        ("scan", "--samples", "2", "--format", "json"),
        ("diagnose", some.run_id, "--samples", "2", "--format", "json"),
        ("inspect", "--pid", str(some.flow_pid), "--samples", "2", "--format", "json"),
        ("report", "--since", "1h", "--format", "json"),
    ]
    for command in commands:
        done = _doctor(*command, env=env)
        assert done.returncode in (0, 1), (command, done.stderr)
    assert _run_states(demo_environment) == states
    after = _processes(demo_environment)
    for pid, (start, _state, pending, shared) in processes.items():
        assert pid in after, f"process {pid} ended while the doctor looked at it"
        assert after[pid][0] == start
        assert after[pid][1] not in ("T", "t"), f"process {pid} left stopped"
        # No signal was delivered and left pending by the doctor (SIGTERM is bit 15).
        assert not (after[pid][2] | after[pid][3]) & ~(pending | shared) & (1 << (signal.SIGTERM - 1))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to stage root-owned runs and drop to nobody")
def test_an_unprivileged_scan_says_what_it_cannot_see(
    demo_environment: DemoEnvironment, tmp_path: Path
) -> None:
    # tmp_path's parents are root's alone: nobody's PREFECT_HOME must be reachable by nobody.
    home = Path(tempfile.mkdtemp(prefix="pcd-nobody-"))
    os.chown(home, NOBODY, NOBODY)
    env = clean_environ(PREFECT_API_URL=demo_environment.api_url, PREFECT_HOME=str(home), HOME=str(home))
    try:
        done = _doctor("scan", "--samples", "1", "--format", "json", env=env, user=NOBODY)
    finally:
        shutil.rmtree(home)
    assert done.returncode == 1, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    assert any(
        error.startswith("partial scan:") and "CAP_SYS_PTRACE" in error for error in document["errors"]
    )
    verdicts = {entry["flow_run"]["id"]: entry["verdict"] for entry in document["runs"] if entry["flow_run"]}
    for run in demo_environment.runs:
        if run.process_alive and run.expected_state == "CANCELLING" and run.flow_pid:
            verdict = verdicts[run.run_id]
            assert verdict["cause"] == "not_attachable", (run.scenario, verdict["summary"])
            assert "CAP_SYS_PTRACE" in verdict["summary"] + " ".join(verdict["remediation"])


#: How long a py-spy the doctor started may outlive the doctor's death (README, Guarantees): it
#: finishes the dump in progress and exits. It is not killed mid-dump (a tracer killed while its
#: target is stopped can leave it stopped); a dump takes milliseconds to a second.
PY_SPY_OUTLIVES_AT_MOST = 5.0


def _py_spies(tag: str) -> dict[int, int]:
    """The py-spy processes of the doctor run tagged `tag`: pid → parent pid.

    A py-spy is the doctor's when its environment carries the tag the test gave the doctor's (it
    inherits it): still true once the doctor is dead and its py-spy reparented, and never true of
    another job's py-spy on the same machine. /proc/PID/stat first, the environment only of py-spy
    processes: polled fast."""
    found = {}
    marker = f"{_TAG}={tag}".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                text = stat.read()
            if text[text.find("(") + 1 : text.rfind(")")] != "py-spy":
                continue
            with open(f"/proc/{entry.name}/environ", "rb") as environ:
                if marker not in environ.read().split(b"\0"):
                    continue
        except OSError:
            continue
        found[int(entry.name)] = int(text[text.rfind(")") + 2 :].split()[1])
    return found


_TAG = "PCD_TEST_DOCTOR_TAG"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_killing_the_doctor_mid_sample_leaves_no_target_stopped(
    demo_environment: DemoEnvironment, tmp_path: Path, sig: signal.Signals
) -> None:
    tag = uuid.uuid4().hex
    env = clean_environ(PREFECT_API_URL=demo_environment.api_url, PREFECT_HOME=str(tmp_path), **{_TAG: tag})
    said = (tmp_path / "doctor.err").open("w")
    doctor = subprocess.Popen(
        [sys.executable, "-m", "prefect_cancel_doctor", "scan", "--samples", "100", "--interval", "0.05"],
        stdout=subprocess.DEVNULL,
        stderr=said,
        env=env,
    )
    # A plain py-spy dump lives a few milliseconds (a scan takes a native one only where a call is
    # unexplained): look without pause, for as long as the doctor runs.
    started = time.monotonic()
    deadline = started + 120
    looks = 0
    seen_sampling = False
    while doctor.poll() is None and time.monotonic() < deadline:
        looks += 1
        if doctor.pid in _py_spies(tag).values():
            seen_sampling = True
            break
        time.sleep(0.001)
    said.close()
    # What the loop saw decides, not a second look: that py-spy may have ended in between.
    if not seen_sampling:
        waited = time.monotonic() - started
        pytest.fail(
            f"the doctor never started sampling (exit {doctor.poll()}; {looks} looks in {waited:.0f} s, "
            f"targets traced now: {_traced(demo_environment)}): "
            + (tmp_path / "doctor.err").read_text()[-2000:]
            + _where_it_is(doctor)
        )
    doctor.send_signal(sig)
    sent = time.monotonic()
    doctor.wait(timeout=60)
    # Its py-spy end within the bound, whatever py-spy of other jobs the machine runs meanwhile.
    while _py_spies(tag) and time.monotonic() - sent < PY_SPY_OUTLIVES_AT_MOST + 10:
        time.sleep(0.02)
    outlived = time.monotonic() - sent
    assert _py_spies(tag) == {}, "a py-spy outlived the doctor"
    assert outlived <= PY_SPY_OUTLIVES_AT_MOST, f"its py-spy ended {outlived:.1f} s after {sig.name}"
    for pid, (_, state, _, _) in _processes(demo_environment).items():
        assert state not in ("T", "t"), f"process {pid} left stopped after {sig.name}"


def _traced(environment: DemoEnvironment) -> list[int]:
    """The staged processes a debugger is attached to (TracerPid), i.e. being dumped."""
    traced = []
    for pid in _processes(environment):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if procfs._parse_status(status).get("TracerPid", "0") != "0":
            traced.append(pid)
    return traced


def _where_it_is(doctor: subprocess.Popen[bytes]) -> str:
    """The stack of a doctor that has not sampled when it should have (then it is killed): what it
    was waiting for is the cause to look for."""
    if doctor.poll() is not None:
        return ""
    try:
        dumped = subprocess.run(
            [find_py_spy(), "dump", "--pid", str(doctor.pid)], capture_output=True, text=True, timeout=30
        )
        return "\nits stack:\n" + dumped.stdout + dumped.stderr
    finally:
        doctor.kill()
        doctor.wait()


SECRET_PROGRAM = """
import sys, time
def connect(password):
    api_key = "sk-live-123"
    dsn = "postgresql://etl:hunter2@db.internal:5432/warehouse"
    print("ready", flush=True)
    time.sleep(3600)
connect("hunter2")
"""
PLANTED = ("hunter2", "sk-live-123", "pnu_PLANTEDKEY0000", "planted:authstring")


def test_no_output_of_any_command_carries_a_secret(demo_environment: DemoEnvironment, tmp_path: Path) -> None:
    target = subprocess.Popen(
        [sys.executable, "-c", SECRET_PROGRAM, "--password", "hunter2", "postgresql://etl:hunter2@db/x"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert target.stdout is not None and target.stdout.readline().strip() == "ready"
        env = clean_environ(
            PREFECT_API_URL=demo_environment.api_url,
            PREFECT_HOME=str(tmp_path),
            PREFECT_API_KEY="pnu_PLANTEDKEY0000",
            PREFECT_API_AUTH_STRING="planted:authstring",
        )
        commands: list[tuple[str, ...]] = [
            (
                "inspect",
                "--pid",
                str(target.pid),
                "--any-process",
                "--locals",
                "--samples",
                "1",
                "--format",
                fmt,
            )
            for fmt in ("terminal", "json")
        ]
        commands += [("scan", "--samples", "1", "--locals", "--format", fmt) for fmt in ("terminal", "json")]
        # The report's secrets are the connection's (its sampling is scan's, checked above): not sampled.
        commands += [
            ("report", "--since", "1h", "--top", "100", "--no-sample", "--format", fmt)
            for fmt in ("terminal", "markdown", "html", "json")
        ]
        commands.append(("scan", "--api-url", "http://admin:hunter2@127.0.0.1:9/api"))
        for command in commands:
            done = _doctor(*command, env=env)
            for secret in PLANTED:
                assert secret not in done.stdout + done.stderr, (command, secret)
        inspected = json.loads(_doctor(*commands[1], env=env).stdout)
        proc = inspected["runs"][0]["target"]["processes"][0]["proc"]
        assert "--password" in proc["cmdline"], "the command line is shown, with its secrets hidden"
    finally:
        target.kill()
        target.wait()


class _RetryOn503(httpx.HTTPTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for _ in range(20):
            response = super().handle_request(request)
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(0.25)
        return response


HOSTILE_NAME = "etl\x1b[2J\x1b]0;pwned\x07 | [click](http://evil) `x` <b>"
#: Flow names may not hold / % & > < (the server's pattern); run names may.
HOSTILE_FLOW = "etl\x1b[2J\x1b]0;pwned\x07 | [click](evil) `x`"


def test_hostile_names_and_pids_print_inert_in_every_format(
    demo_environment: DemoEnvironment, tmp_path: Path
) -> None:
    # The staged server's SQLite answers 503 while busy: retried by the transport.
    api = httpx.Client(base_url=demo_environment.api_url + "/", transport=_RetryOn503())
    flow = api.post("flows/", json={"name": HOSTILE_FLOW}).raise_for_status().json()
    run = api.post(
        "flow_runs/", json={"flow_id": flow["id"], "name": HOSTILE_NAME, "state": {"type": "RUNNING"}}
    )
    run_id = run.raise_for_status().json()["id"]
    try:
        api.patch(f"flow_runs/{run_id}", json={"infrastructure_pid": "²"}).raise_for_status()
        cancelling = {"state": {"type": "CANCELLING", "message": "\x1b[31mred"}, "force": True}
        api.post(f"flow_runs/{run_id}/set_state", json=cancelling).raise_for_status()
        env = clean_environ(PREFECT_API_URL=demo_environment.api_url, PREFECT_HOME=str(tmp_path))
        commands: list[tuple[str, ...]] = [
            ("scan", "--samples", "1", "--format", "json"),
            ("scan", "--samples", "1", "--format", "terminal"),
            ("scan", "--samples", "1", "--format", "markdown"),
            ("diagnose", run_id, "--format", "terminal"),
        ]
        # The hostile run has no process to sample: the report lists it from the API alone.
        commands += [
            ("report", "--since", "1h", "--top", "100", "--no-sample", "--format", fmt)
            for fmt in ("terminal", "markdown", "html", "json")
        ]
        in_table = True
        outputs = {}
        for command in commands:
            done = _doctor(*command, env={**env, "COLUMNS": "200"})
            outputs[command] = done.stdout
            # scan and diagnose: stuck runs (1); report: no --fail-on rule, so 0.
            assert done.returncode == (0 if command[0] == "report" else 1), (command, done.stderr)
            assert "\x1b" not in done.stdout + done.stderr and "\x07" not in done.stdout, command
            assert "Traceback" not in done.stderr
            if command[:2] == ("scan", "--samples") and command[-1] == "json":
                ids = [e["flow_run"]["id"] for e in json.loads(done.stdout)["runs"] if e["flow_run"]]
                # The terminal table shows the first SHOWN runs, Cancelling longest first: the new hostile
                # run is among them on a small staged set only (the full catalog stages more than SHOWN).
                in_table = ids.index(run_id) < SHOWN
            elif command[:2] == ("scan", "--samples") and command[-1] == "terminal" and not in_table:
                assert f"the first {SHOWN}" in done.stdout, command
            elif command[-1] != "json":
                assert "x1b" in done.stdout, command  # shown as text (Markdown escapes \\ and [)
        markdown = outputs[("report", "--since", "1h", "--top", "100", "--no-sample", "--format", "markdown")]
        assert "[click](http://evil)" not in markdown and "<b>" not in markdown
        html = outputs[("report", "--since", "1h", "--top", "100", "--no-sample", "--format", "html")]
        assert "<b>" not in html.replace("<b>Cancellation", "")
    finally:
        api.post(f"flow_runs/{run_id}/set_state", json={"state": {"type": "CANCELLED"}, "force": True})
        api.close()
