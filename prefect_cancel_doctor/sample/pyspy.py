"""Run `py-spy dump --json` against a process and parse what it prints.

py-spy 0.4.3 emits one object per thread: `thread_id` (the pthread id),
`os_thread_id` (the kernel tid, as seen in the target's PID namespace),
`thread_name`, `active`, `owns_gil` and `frames`, innermost first. Each frame
has `name`, `filename`, `module`, `short_filename`, `line`, `locals`,
`is_entry` and `is_shim_entry`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefect_cancel_doctor.model import Frame, ThreadSample
from prefect_cancel_doctor.redact import redact_local
from prefect_cancel_doctor.sample.procfs import PathLike, read_state


class SamplerError(Exception):
    """py-spy could not sample a process."""


class PySpyNotFound(SamplerError):
    """No py-spy binary could be found."""


class PermissionDenied(SamplerError):
    """The kernel refused to let py-spy read the target's memory."""


class ProcessGone(SamplerError):
    """The target process does not exist (any more)."""


class NotPython(SamplerError):
    """The target is not a Python process py-spy recognises."""


class SampleTimeout(SamplerError):
    """py-spy did not finish within the timeout and was killed."""


class NativeUnavailable(SamplerError):
    """`--native` failed (e.g. UNW_EBADREG on a containerised target); retry without it."""


# Texts py-spy 0.4.3 prints on stderr (its own words, or the OS error it wraps).
_PERMISSION_MARKERS = ("Permission Denied", "Permission denied", "Operation not permitted")
_GONE_MARKERS = ("No such file or directory", "No such process")
_NOT_PYTHON_MARKERS = ("Failed to find python version", "Failed to find a python interpreter")
_PERMISSION_HINT = (
    "py-spy needs ptrace access to the target: run as root (sudo), give the "
    "container --cap-add SYS_PTRACE, or lower kernel.yama.ptrace_scope to 0 "
    "(or 1 when sampling your own processes)."
)


def find_py_spy() -> str:
    """Path of the py-spy binary: $PCD_PY_SPY, then $PATH, then next to this Python."""
    configured = os.environ.get("PCD_PY_SPY")
    if configured:
        return configured
    on_path = shutil.which("py-spy")
    if on_path:
        return on_path
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise PySpyNotFound("py-spy not found: pip install py-spy, or set PCD_PY_SPY to its path")


def dump(
    pid: int,
    *,
    native: bool = False,
    locals: bool = False,
    timeout: float = 5.0,
    proc_root: PathLike = "/proc",
) -> tuple[ThreadSample, ...]:
    """One `py-spy dump` of `pid`, killed after `timeout` seconds; raises a SamplerError."""
    command = [find_py_spy(), "dump", "--pid", str(pid), "--json"]
    if native:
        command.append("--native")
    if locals:
        command.append("--locals")
    # RUST_BACKTRACE=1 in the caller's environment would bury the error under a backtrace.
    env = {**os.environ, "RUST_BACKTRACE": "0", "RUST_LIB_BACKTRACE": "0"}
    try:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise PySpyNotFound(f"cannot run py-spy ({command[0]}): {exc}") from exc
    with process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise _timeout_error(pid, timeout, proc_root) from None
    if process.returncode != 0:
        raise classify_error(stderr.decode("utf-8", errors="replace"), native=native)
    try:
        return parse_dump(stdout.decode("utf-8", errors="replace"))
    except (ValueError, KeyError, TypeError) as exc:
        raise SamplerError(f"could not parse py-spy output: {exc}") from exc


def parse_dump(text: str) -> tuple[ThreadSample, ...]:
    """Parse `py-spy dump --json` output into threads (kernel view not attached yet)."""
    return tuple(_parse_thread(thread) for thread in json.loads(text))


def classify_error(stderr: str, *, native: bool) -> SamplerError:
    """Turn py-spy's stderr (exit status 1) into the matching SamplerError."""
    message = _error_message(stderr)
    if any(marker in stderr for marker in _PERMISSION_MARKERS):
        return PermissionDenied(f"{message}. {_PERMISSION_HINT}")
    if any(marker in stderr for marker in _GONE_MARKERS):
        return ProcessGone(message)
    if any(marker in stderr for marker in _NOT_PYTHON_MARKERS):
        return NotPython(message)
    # Anything else under --native is treated as an unwinding failure: a plain dump may work.
    if native:
        return NativeUnavailable(message)
    return SamplerError(message)


def _parse_thread(thread: dict[str, Any]) -> ThreadSample:
    frames = []
    native_frames = []
    for frame in thread["frames"]:
        # py-spy sets `module` (the shared object's path) only on native frames.
        # Only the native frames above the innermost Python frame matter: they are
        # the C call in progress; those below are the interpreter and thread start-up.
        if frame.get("module") is None:
            frames.append(_parse_frame(frame))
        elif not frames:
            native_frames.append(str(frame["name"]))
    return ThreadSample(
        thread_id=int(thread["thread_id"]),
        native_id=thread.get("os_thread_id"),
        name=thread.get("thread_name"),
        active=bool(thread.get("active")),
        owns_gil=bool(thread.get("owns_gil")),
        frames=tuple(frames),
        native_frames=tuple(native_frames),
    )


def _parse_frame(frame: dict[str, Any]) -> Frame:
    raw_locals = frame.get("locals")
    return Frame(
        function=str(frame["name"]),
        filename=str(frame["filename"]),
        line=int(frame["line"]),
        locals=None if raw_locals is None else _redact(raw_locals),
    )


def _redact(raw_locals: list[dict[str, Any]]) -> dict[str, str]:
    values = {}
    for variable in raw_locals:
        name = str(variable["name"])
        shown = variable.get("repr")
        values[name] = redact_local(name, None if shown is None else str(shown))
    return values


def _error_message(stderr: str) -> str:
    """py-spy's error and its distinct causes on one line, without the Rust backtrace."""
    parts = []
    for line in stderr.split("Stack backtrace:")[0].splitlines():
        line = line.strip()
        if not line or line.startswith("Caused by"):
            continue
        if re.match(r"\d+: ", line):
            line = line.split(": ", 1)[1]
        line = line.removeprefix("Error: ")
        if line not in parts:
            parts.append(line)
    return ": ".join(parts) or "py-spy failed without a message"


def _timeout_error(pid: int, timeout: float, proc_root: PathLike) -> SampleTimeout:
    message = f"py-spy dump of pid {pid} did not finish within {timeout:g}s and was killed"
    state = _settled_state(pid, proc_root)
    if state in ("T", "t"):
        message += f"; the target is left stopped (state {state}): resume it with `kill -CONT {pid}`"
    return SampleTimeout(message)


def _settled_state(pid: int, proc_root: PathLike) -> str | None:
    """The target's state once the kernel has had a moment to detach the killed tracer."""
    state = read_state(pid, proc_root)
    for _ in range(10):
        if state not in ("T", "t"):
            break
        time.sleep(0.01)
        state = read_state(pid, proc_root)
    return state
