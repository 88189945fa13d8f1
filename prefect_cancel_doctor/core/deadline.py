"""Deadlines: how long one request to an API, and one whole command, may take.

httpx's timeouts bound each socket operation (a connect, one read, one write), not a
request: a server that drips its answer a byte every two seconds never trips a 15 s
read timeout, and held a scan for as long as it dripped. Two deadlines bound it:

- the **request deadline** (`PCD_REQUEST_DEADLINE`, 60 s): one request to the Prefect or
  the Kubernetes API, its retries included, from the connect to the answer's last byte;
- the **command deadline** (`--deadline`, `PCD_DEADLINE`, 300 s) of `scan`, `diagnose`,
  `inspect` and `report`: every request of the command ends by then, whichever thread sends
  it, and a command still running then is stopped (`watchdog`).

They are enforced where the time goes: every socket operation of the doctor's HTTP clients
waits at most until the nearest deadline (`_http.transport`), and an answer is read chunk by
chunk against it (`_http.fetch`). Nothing here imports httpx.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

from prefect_cancel_doctor.errors import EXIT_API, ConfigurationError, DoctorError

REQUEST_DEADLINE_ENV = "PCD_REQUEST_DEADLINE"
COMMAND_DEADLINE_ENV = "PCD_DEADLINE"
#: Seconds one API request may take, retries included.
DEFAULT_REQUEST_DEADLINE = 60.0
#: Seconds `scan`, `diagnose`, `inspect` and `report` may take.
DEFAULT_COMMAND_DEADLINE = 300.0
#: A socket operation that ended this close to a deadline ended because of it.
_SLACK = 0.05
#: The watchdog stops a command this long after its deadline: the requests it waits on end at the
#: deadline itself, and say which one did not answer.
WATCHDOG_GRACE = 0.5


@dataclass(frozen=True)
class _Bound:
    """One deadline: when it ends (`time.monotonic`), how long it was, and which one it is."""

    end: float
    seconds: float
    kind: str  # "request" | "command"


class DeadlinePassed(Exception):
    """A request's or the command's deadline passed before the answer was complete."""

    def __init__(self, kind: str, seconds: float) -> None:
        self.kind, self.seconds = kind, seconds
        super().__init__(f"{self.describe()} passed")

    def describe(self) -> str:
        """``the request deadline (60 s, PCD_REQUEST_DEADLINE)``."""
        if self.kind == "command":
            return f"the command's deadline ({self.seconds:g} s, --deadline or {COMMAND_DEADLINE_ENV})"
        return f"the request deadline ({self.seconds:g} s, {REQUEST_DEADLINE_ENV})"

    @property
    def hint(self) -> str:
        """What to change when the server is merely slow."""
        if self.kind == "command":
            return f"raise --deadline (or {COMMAND_DEADLINE_ENV}); 0 sets no limit"
        return f"raise {REQUEST_DEADLINE_ENV} if the server is only slow"


class CommandDeadlineError(DoctorError):
    """The command was stopped at its deadline: exit 3, as an API that does not answer."""

    exit_code = EXIT_API


class CommandDeadlineInterrupt(BaseException):
    """Raised in the main thread when the command's deadline passes (`watchdog`).

    A BaseException, as KeyboardInterrupt is: it unwinds the command the way Ctrl-C does
    (sampling threads finish their dump, nothing is left stopped), past `except Exception`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


_command: _Bound | None = None
_local = threading.local()


def env_number(name: str, default: float) -> float:
    """A non-negative number from the environment variable `name` (unset or empty: `default`)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigurationError(
            f"{name}={raw[:40]!r} is not a non-negative number", hint=f"e.g. {name}={default:g}"
        )
    return value


def request_seconds() -> float:
    """The request deadline: `PCD_REQUEST_DEADLINE`, else 60 s (0: none)."""
    return env_number(REQUEST_DEADLINE_ENV, DEFAULT_REQUEST_DEADLINE)


def set_command(seconds: float | None) -> None:
    """Start the command's deadline now (None or 0: none); every thread's requests end by it."""
    global _command
    _command = _Bound(time.monotonic() + seconds, seconds, "command") if seconds else None


def _nearest() -> _Bound | None:
    bounds = [b for b in (_command, getattr(_local, "request", None)) if b is not None]
    return min(bounds, key=lambda b: b.end) if bounds else None


@contextlib.contextmanager
def request(seconds: float | None = None) -> Iterator[None]:
    """Bound what this thread sends within: `seconds` (default `request_seconds()`; 0: none).

    Nested, the outer bound still holds (a request made while sending another, such as a CSRF
    token, shares its deadline)."""
    seconds = request_seconds() if seconds is None else seconds
    outer: _Bound | None = getattr(_local, "request", None)
    bound = _Bound(time.monotonic() + seconds, seconds, "request") if seconds else None
    if outer is not None and (bound is None or outer.end <= bound.end):
        bound = outer
    _local.request = bound
    try:
        yield
    finally:
        _local.request = outer


def remaining() -> float | None:
    """Seconds until the nearest deadline (negative once passed); None when there is none."""
    bound = _nearest()
    return None if bound is None else bound.end - time.monotonic()


def passed() -> DeadlinePassed | None:
    """The deadline that has passed (within a few milliseconds), if one has."""
    bound = _nearest()
    if bound is not None and bound.end - time.monotonic() <= _SLACK:
        return DeadlinePassed(bound.kind, bound.seconds)
    return None


def check() -> None:
    """Raise `DeadlinePassed` once the nearest deadline has passed."""
    bound = _nearest()
    if bound is not None and time.monotonic() >= bound.end:
        raise DeadlinePassed(bound.kind, bound.seconds)


def clamp(timeout: float | None) -> float | None:
    """`timeout` of one socket operation, cut to the nearest deadline; `DeadlinePassed` past it."""
    bound = _nearest()
    if bound is None:
        return timeout
    left = bound.end - time.monotonic()
    if left <= 0:
        raise DeadlinePassed(bound.kind, bound.seconds)
    return left if timeout is None else min(timeout, left)


@contextlib.contextmanager
def watchdog(seconds: float | None) -> Iterator[None]:
    """The command's deadline: its requests end by it, and `WATCHDOG_GRACE` after it the main
    thread gets `CommandDeadlineInterrupt` (even when it waits on a lock or a socket: a real
    SIGALRM is sent to it, from a timer thread, so no interval timer of anyone else's is touched).

    Outside the main thread (a command run by a flow's worker thread) only the requests are bound."""
    set_command(seconds)
    main = threading.current_thread() is threading.main_thread()
    if not seconds or not main:
        try:
            yield
        finally:
            set_command(None)
        return
    fired, closing = threading.Event(), threading.Event()
    assert seconds is not None

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        if fired.is_set() and not closing.is_set():
            closing.set()  # once
            raise CommandDeadlineInterrupt(seconds)
        if callable(previous):
            previous(signum, frame)

    def fire() -> None:
        fired.set()
        with contextlib.suppress(OSError):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGALRM)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    timer = threading.Timer(seconds + WATCHDOG_GRACE, fire)
    timer.daemon = True
    timer.start()
    try:
        try:
            yield
        finally:
            closing.set()  # from here on a late alarm raises nothing
    finally:
        timer.cancel()
        signal.signal(signal.SIGALRM, previous)
        set_command(None)


__all__ = [
    "COMMAND_DEADLINE_ENV",
    "DEFAULT_COMMAND_DEADLINE",
    "DEFAULT_REQUEST_DEADLINE",
    "REQUEST_DEADLINE_ENV",
    "CommandDeadlineError",
    "CommandDeadlineInterrupt",
    "DeadlinePassed",
    "check",
    "clamp",
    "env_number",
    "passed",
    "remaining",
    "request",
    "request_seconds",
    "set_command",
    "watchdog",
]
