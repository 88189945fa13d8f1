"""No confused deputy: a target's source is read only as the target could read it.

A flow names its own source files: `compile(src, "/root/secret.txt", "exec")` makes a
frame "in" a file only root may read. A doctor running as root must not read that file
for an unprivileged flow, neither to show "the source line" nor to look for a swallowing
`except`, and never put it in an output or in the run's published artifact and events.
What the target may read is still read, as the target sees it: through its own root
(mount namespace), with its own credentials.

GIVEN real processes run as `nobody` (and one in a mount namespace of its own), and files
root alone may read, WHEN root reads their source (`procfs`) or `scan`s their run in every
format and publishes it, THEN no byte of a root-only file appears anywhere, the verdict
still names file:line, and readable files are read through the target's root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from prefect_cancel_doctor.proc import as_target, procfs
from tests.helpers import clean_environ, run_cli

if TYPE_CHECKING:
    from prefect_cancel_doctor.demo.environment import DemoEnvironment

pytestmark = [
    pytest.mark.server,
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or os.geteuid() != 0,
        reason="needs root: to make root-only files and run targets as nobody",
    ),
]

NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
#: The line the flow blocks at, in the file it names.
LINE = 7
#: The flow: code compiled under a root-only file's name, blocking at LINE of it.
PROGRAM = r"""
import sys, time
name, ready = sys.argv[1], sys.argv[2]
source = "\n" * 6 + "open(ready, 'w').write('ready'); time.sleep(3600)\n"
exec(compile(source, name, "exec"), {"ready": ready, "time": time})
"""


@pytest.fixture
def private(tmp_path: Path) -> Iterator[Path]:
    """A world-searchable directory (nobody may write its ready files there) holding a
    root-only directory."""
    base = Path(tempfile.mkdtemp(prefix="pcd-deputy-"))
    os.chmod(base, 0o755)
    (base / "ready").mkdir(mode=0o777)
    os.chmod(base / "ready", 0o777)
    (base / "root-only").mkdir(mode=0o700)
    try:
        yield base
    finally:
        shutil.rmtree(base)


def _secret_file(path: Path, token: str) -> Path:
    path.write_text("".join(f"{token} line {n}\n" for n in range(1, 40)))
    os.chmod(path, 0o600)
    return path


def _blocked(command: list[str], ready: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, env=env, start_new_session=True, cwd="/")
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert process.poll() is None, f"the target exited: {process.returncode}"
        assert time.monotonic() < deadline, "the target never got ready"
        time.sleep(0.05)
    return process


def _children() -> list[int]:
    """This process's children (its readers among them)."""
    return [
        int(pid)
        for task in Path(f"/proc/{os.getpid()}/task").iterdir()
        for pid in (task / "children").read_text().split()
    ]


def _processes() -> list[tuple[int, list[str]]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
            except OSError:
                continue
            found.append((int(entry.name), argv))
    return found


def _end(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(timeout=30)


def test_root_reads_a_source_file_only_as_the_target_could(private: Path) -> None:
    token = uuid.uuid4().hex
    secret = _secret_file(private / "root-only" / "secret.txt", token)
    # Readable by anyone, but in a directory only root may search.
    behind = private / "root-only" / "behind.py"
    behind.write_text(f"{token} behind a closed directory\n")
    os.chmod(behind, 0o644)
    public = private / "public.py"
    public.write_text("import time\nx = 1  # public\n")
    os.chmod(public, 0o644)
    (private / "link.py").symlink_to(secret)
    os.mkfifo(private / "fifo.py", 0o666)
    ready = private / "ready" / "plain"
    target = _blocked([*AS_NOBODY, sys.executable, "-c", PROGRAM, str(secret), str(ready)], ready)
    # This process's other children (the session's Prefect server, say) are no readers.
    before = set(_children())
    try:
        pid = target.pid
        # GIVEN a process of nobody; WHEN root reads what its frames name
        assert procfs.read_source_line(pid, str(secret), LINE) is None
        assert procfs.read_source_text(pid, str(secret)) is None
        assert procfs.read_source_line(pid, str(behind), 1) is None
        assert procfs.read_source_line(pid, str(private / "link.py"), LINE) is None
        assert procfs.read_source_line(pid, "/etc/shadow", 1) is None
        # A FIFO or a device would block or never end: not read, and at once.
        started = time.monotonic()
        assert procfs.read_source_text(pid, str(private / "fifo.py")) is None
        assert procfs.read_source_text(pid, "/dev/zero") is None
        assert time.monotonic() - started < 3
        # THEN what nobody may read is still read.
        assert procfs.read_source_line(pid, str(public), 2) == "x = 1  # public"
        # Each reader (one per target process) ends when told, leaving no process behind.
        readers = set(_children()) - before - {pid}
        assert readers, "no reader was forked"
        as_target.close_readers()
        assert not readers & set(_children())
        # The same file, for a process of root's own, is its to read.
        assert procfs.read_source_line(os.getpid(), str(secret), LINE) == f"{token} line {LINE}"
    finally:
        _end(target)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_source_is_read_through_the_target_mount_namespace(private: Path) -> None:
    # GIVEN a process of nobody in a mount namespace of its own, where a tmpfs hides the host's
    # file at the same path, and a symlink (on a directory both share) to that path
    hidden = Path(tempfile.mkdtemp(prefix="pcd-deputy-ns-"))
    try:
        os.chmod(hidden, 0o755)
        (hidden / "flow.py").write_text("HOST copy\n")
        os.chmod(hidden / "flow.py", 0o644)
        (private / "via-link.py").symlink_to(hidden / "flow.py")
        ready = private / "ready" / "ns"
        script = (
            f"mount -t tmpfs pcd {hidden} && echo 'namespace copy' > {hidden}/flow.py && "
            f"chmod 644 {hidden}/flow.py && exec {' '.join(AS_NOBODY)} {sys.executable} -c "
            f"\"import time; open('{ready}', 'w').write('ready'); time.sleep(3600)\""
        )
        target = _blocked(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], ready)
        try:
            pid = target.pid  # unshare, sh and setpriv each exec the next: one process
            # WHEN root reads the file the process names, and the symlink to it
            # THEN both are the namespace's copy: an absolute symlink resolves in the target's root
            assert procfs.read_source_line(pid, str(hidden / "flow.py"), 1) == "namespace copy"
            assert procfs.read_source_line(pid, str(private / "via-link.py"), 1) == "namespace copy"
        finally:
            _end(target)
    finally:
        subprocess.run(["umount", "-l", str(hidden)], capture_output=True, check=False)
        shutil.rmtree(hidden, ignore_errors=True)


# -- end to end: scan, every format, and what --publish writes --------------------------------------


def _api(environment: DemoEnvironment, method: str, path: str, body: object = None) -> Any:
    response = httpx.request(method, f"{environment.api_url}/{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json() if response.content else None


def _cancelling_run(environment: DemoEnvironment) -> str:
    """A run of the staged `sleep` deployment, Running (its process is started by the test)."""
    from prefect.client.schemas.objects import State, StateType

    harness = environment.harness
    deployment = uuid.UUID(environment.run("sleep").deployment_id)
    run = harness.client.create_flow_run_from_deployment(
        deployment, parameters={"ready_path": "/nonexistent"}, state=State(type=StateType.RUNNING)
    )
    harness.run_ids.add(str(run.id))
    return str(run.id)


def test_scan_never_shows_nor_publishes_a_file_the_flow_could_not_read(
    demo_environment: DemoEnvironment, private: Path, tmp_path: Path
) -> None:
    token = uuid.uuid4().hex
    secret = _secret_file(private / "root-only" / "secret.txt", token)
    ready = private / "ready" / "flow"
    harness = demo_environment.harness
    # GIVEN a run in Cancelling whose process, nobody's, blocks in code named after a root-only file
    run_id = _cancelling_run(demo_environment)
    env = {**os.environ, "PREFECT__FLOW_RUN_ID": run_id}
    target = _blocked([*AS_NOBODY, sys.executable, "-c", PROGRAM, str(secret), str(ready)], ready, env)
    try:
        harness.client.update_flow_run(uuid.UUID(run_id), infrastructure_pid=str(target.pid))
        harness.force_state(run_id, "CANCELLING")

        # WHEN root scans in every format, and publishes the verdicts
        doctor_env = clean_environ(
            PREFECT_API_URL=demo_environment.api_url, PREFECT_HOME=str(tmp_path), COLUMNS="200"
        )
        outputs: list[tuple[tuple[str, ...], str]] = []
        for args in (
            ("scan", "--samples", "2", "--format", "json", "--publish"),
            ("scan", "--samples", "2", "--format", "markdown"),
            ("scan", "--samples", "2"),
            ("diagnose", run_id, "--samples", "2", "--format", "markdown"),
            ("inspect", "--pid", str(target.pid), "--samples", "2"),
        ):
            done = run_cli(*args, env=doctor_env)
            assert done.returncode == 1, (args, done.stderr[-2000:])
            outputs.append((args, done.stdout + done.stderr))
            if args[-1] == "--publish":
                document = json.loads(done.stdout)
        artifacts = _api(
            demo_environment, "POST", "artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}}
        )
        events = _api(
            demo_environment,
            "POST",
            "events/filter",
            {"filter": {"related": {"id": [f"prefect.flow-run.{run_id}"]}, "order": "ASC"}},
        )["events"]

        # THEN not a byte of the root-only file is anywhere
        assert artifacts, "scan --publish wrote no artifact for the run"
        outputs += [(("artifact",), json.dumps(artifacts)), (("events",), json.dumps(events))]
        for what, text in outputs:
            assert token not in text, f"{what} shows the root-only file"
        # and the verdict still says where the flow blocks: the file's name and line
        (entry,) = [e for e in document["runs"] if e["flow_run"] and e["flow_run"]["id"] == run_id]
        call = entry["verdict"]["blocking_call"]
        assert (call["filename"], call["line"], call["code"]) == (str(secret), LINE, None), call
        # The readers the doctor forked (one per target) ended with it.
        inspecting = ["inspect", "--pid", str(target.pid)]
        assert not [pid for pid, argv in _processes() if argv[-len(inspecting) - 2 : -2] == inspecting]
        # (the terminal scan details the 20 runs stuck longest: the staged ones, not this one)
        for what, text in (outputs[1], *outputs[3:5]):
            assert f"secret.txt:{LINE}" in text, what
    finally:
        _end(target)
        harness.force_state(run_id, "CANCELLED", "test over")
