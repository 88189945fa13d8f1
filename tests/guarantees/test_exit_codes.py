"""Every outcome has its own exit code and one line on stderr, never a traceback (exit 1 means "stuck")."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import clean_environ

# A bug anywhere in a command: `engine.scan` replaced by one that raises.
CRASHING = """
import sys
import prefect_cancel_doctor.scan.engine as engine
def broken(*args, **kwargs):
    raise RuntimeError("boom http://admin:hunter2@db.internal/x")
engine.scan = broken
from prefect_cancel_doctor.cli import main
sys.argv = ["prefect-cancel-doctor", *sys.argv[1:]]
main()
"""


def _doctor(*args: str, env: dict[str, str], code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = (
        [sys.executable, "-c", code, *args]
        if code
        else [sys.executable, "-m", "prefect_cancel_doctor", *args]
    )
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def test_an_internal_error_is_exit_4_one_line_and_a_redacted_traceback_file(tmp_path: Path) -> None:
    env = clean_environ(PREFECT_HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"))
    done = _doctor("scan", "--api-url", "http://127.0.0.1:9/api", env=env, code=CRASHING)
    assert done.returncode == 4
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("internal error: RuntimeError"), done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    written = Path(lines[0].rsplit("traceback written to ", 1)[1])
    assert written.parent == tmp_path / "state" / "prefect-cancel-doctor"
    text = written.read_text()
    assert "Traceback" in text and "RuntimeError: boom" in text
    assert "hunter2" not in text


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ((), 2),
        (("scan", "--bogus"), 2),
        (("scan", "--api-url", "http://[::1"), 2),
        (("scan", "--api-url", "ftp://host/api"), 2),
        (("scan", "--since", "9" * 400), 2),
        (("scan", "--api-url", "http://127.0.0.1:9/api"), 3),
    ],
)
def test_usage_and_connection_errors_have_their_codes(
    tmp_path: Path, args: tuple[str, ...], code: int
) -> None:
    done = _doctor(*args, env=clean_environ(PREFECT_HOME=str(tmp_path)))
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def silent_server() -> Iterator[tuple[str, threading.Event]]:
    """An API URL whose server accepts connections and never answers, and an event set on the first."""
    connected = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
                connected.set()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/api", connected
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def test_ctrl_c_is_exit_130_without_a_traceback(
    tmp_path: Path, silent_server: tuple[str, threading.Event]
) -> None:
    url, connected = silent_server
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect_cancel_doctor", "scan", "--api-url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_environ(PREFECT_HOME=str(tmp_path)),
    )
    assert connected.wait(30), "the scan never reached the server"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert stderr.strip() == "interrupted"
