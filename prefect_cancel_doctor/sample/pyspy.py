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

from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.core.redact import redact_local
from prefect_cancel_doctor.model import Frame, ThreadSample
from prefect_cancel_doctor.proc.procfs import PathLike, read_state


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
#: The same for a doctor that is root already: never "run as root" to root.
_ROOT_PERMISSION_HINT = (
    "py-spy was refused ptrace access although the doctor runs as root: in a container, give it "
    "--cap-add SYS_PTRACE (and a seccomp profile that allows ptrace); on a host, a security module "
    "(AppArmor, SELinux) or kernel.yama.ptrace_scope=3 forbids it."
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
    except (ValueError, RecursionError) as exc:
        raise SamplerError(f"could not parse py-spy output: {visible(str(exc), 200)}") from exc


def parse_dump(text: str) -> tuple[ThreadSample, ...]:
    """Parse `py-spy dump --json` output into threads (kernel view not attached yet).

    Raises ValueError for anything that is not py-spy's JSON shape.
    """
    threads = json.loads(text)
    if not isinstance(threads, list):
        raise ValueError(f"expected a list of threads, got {type(threads).__name__}")
    return tuple(_parse_thread(thread) for thread in threads)


def classify_error(stderr: str, *, native: bool) -> SamplerError:
    """Turn py-spy's stderr (exit status 1) into the matching SamplerError."""
    message = visible(_error_message(stderr), 500)
    if any(marker in stderr for marker in _PERMISSION_MARKERS):
        hint = _ROOT_PERMISSION_HINT if os.geteuid() == 0 else _PERMISSION_HINT
        return PermissionDenied(f"{message}. {hint}")
    if any(marker in stderr for marker in _GONE_MARKERS):
        return ProcessGone(message)
    if any(marker in stderr for marker in _NOT_PYTHON_MARKERS):
        return NotPython(message)
    # Anything else under --native is treated as an unwinding failure: a plain dump may work.
    if native:
        return NativeUnavailable(message)
    return SamplerError(message)


def _parse_thread(thread: object) -> ThreadSample:
    if not isinstance(thread, dict) or not isinstance(thread.get("frames"), list):
        raise ValueError("a thread without a list of frames")
    frames = []
    native_frames = []
    for frame in thread["frames"]:
        if not isinstance(frame, dict):
            raise ValueError("a frame that is not an object")
        # py-spy sets `module` (the shared object's path) only on native frames.
        # Only the native frames above the innermost Python frame matter: they are
        # the C call in progress; those below are the interpreter and thread start-up.
        if frame.get("module") is None:
            frames.append(_parse_frame(frame))
        elif not frames:
            native_frames.append(visible(str(frame.get("name"))))
    name = thread.get("thread_name")
    return ThreadSample(
        thread_id=_int(thread.get("thread_id"), "thread_id"),
        native_id=_int(thread["os_thread_id"], "os_thread_id")
        if thread.get("os_thread_id") is not None
        else None,
        name=visible(str(name), 200) if name is not None else None,
        active=bool(thread.get("active")),
        owns_gil=bool(thread.get("owns_gil")),
        frames=tuple(frames),
        native_frames=tuple(native_frames),
    )


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} is not an integer: {value!r:.40}")
    return value


def _parse_frame(frame: dict[str, object]) -> Frame:
    raw_locals = frame.get("locals")
    return Frame(
        function=visible(str(frame.get("name")), 300),
        filename=visible(str(frame.get("filename")), 1000),
        line=_int(frame.get("line"), "line"),
        locals=_redact(raw_locals) if isinstance(raw_locals, list) else None,
    )


def _redact(raw_locals: list[Any]) -> dict[str, str]:
    values = {}
    for variable in raw_locals:
        if not isinstance(variable, dict):
            continue
        name = visible(str(variable.get("name")), 200)
        shown = variable.get("repr")
        values[name] = visible(redact_local(name, None if shown is None else str(shown)))
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
