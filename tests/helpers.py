"""Shared by the whole suite: the CLI run as a user runs it (a subprocess with a clean
environment), progress lines past pytest's capture, and what CI=true makes of a skip."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

from prefect_cancel_doctor.model import ProcSnapshot

CLI = [sys.executable, "-m", "prefect_cancel_doctor"]

#: With CI=true a skipped test fails the run (tests/conftest.py), and what a test needs is a failure.
IN_CI = os.environ.get("CI", "").lower() == "true"


def progress_to(tag: str) -> Callable[[str], None]:
    """Progress lines, `[tag HH:MM:SS] message`, straight to the terminal past pytest's capture."""

    def progress(message: str) -> None:
        stream = sys.__stderr__ or sys.stderr
        stream.write(f"[{tag} {time.strftime('%H:%M:%S')}] {message}\n")
        stream.flush()

    return progress


def unavailable(reason: str) -> NoReturn:
    """What a test needs is missing here: a skip, but a failure with CI=true."""
    if IN_CI:
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


def chromium() -> str:
    """The headless browser the HTML and UI tests open pages in (Debian's `chromium`, which
    `.ci/run` installs)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    unavailable("no Chromium here (apt-get install chromium)")


def clean_environ(**extra: str) -> dict[str, str]:
    """This environment without any PREFECT_* or PCD_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PCD_"))}
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m prefect_cancel_doctor ARGS`, output captured as text."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=timeout)


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def staged_scenarios() -> list[str]:
    """The catalog scenarios the session stages: all of them, or those named in PCD_TEST_SCENARIOS
    (comma-separated; `.ci/run` stages a subset on the oldest Prefect supported)."""
    from prefect_cancel_doctor.demo.catalog import SCENARIOS

    wanted = [name for name in os.environ.get("PCD_TEST_SCENARIOS", "").split(",") if name]
    return sorted(wanted or SCENARIOS)


def carry_out(commands: list[str], env: dict[str, str]) -> None:
    """Run a verdict's `stop_now` commands in bash, exactly as printed, as an on-call would.

    `python` in them is Prefect's environment's (this interpreter's directory leads PATH).
    """
    shell_env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command], env=shell_env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, (command, done.stderr[-2000:])


class TcpForwarder:
    """A local port that forwards every connection to `upstream` (host, port), once started:
    a server that "comes up" at a port a client already aims at."""

    def __init__(self, port: int, upstream: tuple[str, int]) -> None:
        import socketserver
        import threading

        def pump(source: socket.socket, sink: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                for end in (source, sink):
                    with contextlib.suppress(OSError):
                        end.shutdown(socket.SHUT_RDWR)

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with socket.create_connection(upstream) as outbound:
                    back = threading.Thread(target=pump, args=(outbound, self.request), daemon=True)
                    back.start()
                    pump(self.request, outbound)
                    back.join()

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


#: Confidence bands, as the README defines them (section Confidence).
BANDS = ((0.9, "≥ 0.9"), (0.7, "0.7–0.89"), (0.5, "0.5–0.69"), (0.0, "< 0.5"))


def assert_calibrated(verdicts: list[tuple[float, bool]], title: str) -> None:
    """Print, per confidence band, how many of `verdicts` (confidence, right?) were right, and fail
    if a band is right less often than its floor, or a verdict at 0.8 or more is wrong."""
    tally: dict[str, list[bool]] = {label: [] for _, label in BANDS}
    for confidence, right in verdicts:
        tally[next(label for floor, label in BANDS if confidence >= floor)].append(right)
    print(f"\n{title}: confidence band: right / verdicts")
    for floor, label in BANDS:
        print(f"  {label}: {sum(tally[label])} / {len(tally[label])}")
        if tally[label]:
            assert sum(tally[label]) / len(tally[label]) >= floor, (label, tally[label])
    assert all(right for confidence, right in verdicts if confidence >= 0.8), verdicts


def proc_snapshot(pid: int, cmdline: tuple[str, ...] = ("python", "flow.py"), **fields: Any) -> ProcSnapshot:
    """A process as /proc shows it: asleep, no signal caught or pending, no threads, sockets or
    children read; `fields` set the rest (`flow_run_id`, `ppid`, `comm`, ...)."""
    values: dict[str, Any] = {
        "ppid": 1,
        "comm": cmdline[0].rpartition("/")[2] if cmdline else "?",
        "state": "S",
        "ns_pid": pid,
        "sig_ignored": 0,
        "sig_caught": 0,
        "sig_blocked": 0,
        "sig_pending": 0,
        "shared_pending": 0,
        "threads": (),
        "sockets": (),
        "children": (),
        "flow_run_id": None,
        "start_time_ticks": 1,
    }
    return ProcSnapshot(pid=pid, cmdline=cmdline, **(values | fields))


def read_terminal(fd: int, child: subprocess.Popen[bytes], marker: str | None, timeout: float = 180) -> str:
    """What `child` writes to the terminal whose primary side is `fd`, up to `marker` (None: until
    the terminal closes, the child done)."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker is not None and marker.encode() in out:
            break
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            if child.poll() is not None and marker is not None:
                break
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the terminal closed: the child is done
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")


def modules_loaded(*args: str, home: Path, exit_code: int | None = 0) -> set[str]:
    """The modules a fresh interpreter has loaded after the CLI ran with `args` (PREFECT_HOME
    `home`; it must exit with `exit_code`, None: any)."""
    on_exit = "pass" if exit_code is None else f"assert exit.code == {exit_code}, exit.code"
    script = "\n".join(
        [
            "import json, os, sys",
            f"os.environ['PREFECT_HOME'] = {str(home)!r}",
            f"sys.argv = ['prefect-cancel-doctor', *{list(args)!r}]",
            "from prefect_cancel_doctor.cli import main",
            "try:",
            "    main()",
            "except SystemExit as exit:",
            f"    {on_exit}",
            "print(json.dumps(sorted(sys.modules)))",
        ]
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))
