"""The one way out of a command: the spinner, the report to a file or stdout, an error as one line
and its exit code, Ctrl-C and the command's deadline, the traceback file of a bug."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NoReturn, TextIO, TypeVar

import typer

if TYPE_CHECKING:
    from prefect_cancel_doctor.fleet.publish import PublishOutcome
    from prefect_cancel_doctor.model import Report
    from prefect_cancel_doctor.render import Format
    from prefect_cancel_doctor.scan.engine import ProgressFn

T = TypeVar("T")


def progress() -> tuple[ProgressFn, Callable[[], None]]:
    """A spinner on stderr, and what stops it; nothing at all when stderr is not a terminal.

    rich is imported only for the spinner: scripts reading `--format json` do not pay for it.
    """
    if not sys.stderr.isatty():
        return (lambda what, done, total: None), (lambda: None)
    from rich.console import Console

    status = Console(stderr=True).status("starting", spinner="dots")
    status.start()

    def update(what: str, done: int, total: int) -> None:
        status.update(f"{what} {done}/{total}" if total else what)

    return update, status.stop


def collect(work: Callable[[ProgressFn], T], deadline: float | None = None) -> T:
    """`work(progress)` within `deadline` seconds, the spinner shown meanwhile; a `DoctorError`
    ends the command (`fail`)."""
    from prefect_cancel_doctor.errors import DoctorError

    update, stop = progress()
    try:
        with interruptible(deadline):
            result = work(update)
    except DoctorError as exc:
        stop()
        fail(exc)
    stop()
    return result


def write_out(
    output: str | None, to_file: Callable[[str], None], to_stdout: Callable[[TextIO], None]
) -> None:
    """A report written atomically to `output` (a path that cannot be written: a usage error), else
    to stdout."""
    if output:
        try:
            to_file(output)
        except OSError as exc:
            fail(usage(f"cannot write {output}: {exc.strerror or exc}"))
        typer.echo(f"report written to {output}", err=True)
    else:
        to_stdout(sys.stdout)


def emit(report: Report, fmt: Format, color: bool | None, output: str | None, samples_detail: bool) -> int:
    """A scan's report rendered (to `output` if given); the exit code it calls for."""
    from prefect_cancel_doctor.errors import EXIT_OK, EXIT_STUCK
    from prefect_cancel_doctor.render import render, write_report

    write_out(
        output,
        lambda path: write_report(report, fmt, path, color=color, samples_detail=samples_detail),
        lambda stream: render(report, fmt, stream, color=color, samples_detail=samples_detail),
    )
    return EXIT_STUCK if report.needs_attention else EXIT_OK


def run_report(
    fmt: Format,
    color: bool | None,
    work: Callable[[ProgressFn], Report],
    output: str | None = None,
    samples_detail: bool = False,
    deadline: float | None = None,
) -> NoReturn:
    """Run `work(progress) -> Report` within `deadline` seconds, render it (to `output` if given),
    exit with the right code."""
    report = collect(work, deadline)
    raise typer.Exit(emit(report, fmt, color, output, samples_detail))


def published(report: Report, outcome: PublishOutcome) -> Report:
    """A publication's summary and what it could not publish on stderr; `report` with the latter
    among its errors."""
    typer.echo(outcome.summary(), err=True)
    for error in outcome.errors:
        typer.echo(f"warning: {error}", err=True)
    return outcome.onto(report)


@contextlib.contextmanager
def interruptible(deadline: float | None = None) -> Iterator[None]:
    """Ctrl-C ends the command with exit code 130 and one line (click would say 1, "stuck runs");
    the command's `deadline` (seconds, `deadline.watchdog`) with exit code 3 and one line."""
    from prefect_cancel_doctor.core import deadline as deadlines
    from prefect_cancel_doctor.errors import EXIT_INTERRUPTED

    try:
        with deadlines.watchdog(deadline):
            yield
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except deadlines.CommandDeadlineInterrupt as exc:
        passed = deadlines.DeadlinePassed("command", exc.seconds)
        message = f"the command did not finish within {passed.describe()}: stopped"
        fail(deadlines.CommandDeadlineError(message, hint=passed.hint))


def fail(exc: Exception) -> NoReturn:
    """One line on stderr (and the error's hint), then its exit code (a non-`DoctorError`: 2)."""
    from prefect_cancel_doctor.errors import DoctorError

    message = f"error: {exc}"
    hint = getattr(exc, "hint", None)
    if hint:
        message += f"\n\nhint: {hint}"
    typer.echo(message, err=True)
    raise typer.Exit(exc.exit_code if isinstance(exc, DoctorError) else 2)


def usage(message: str) -> Exception:
    from prefect_cancel_doctor.errors import ConfigurationError

    return ConfigurationError(message)


def write_traceback(exc: BaseException) -> str:
    """The traceback, redacted, in the user's state directory (else a temporary file): its path."""
    import os
    import tempfile
    import time
    import traceback
    from pathlib import Path

    from prefect_cancel_doctor.core.redact import redact_url_passwords, scrub

    text = scrub(redact_url_passwords("".join(traceback.format_exception(exc))))
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    name = f"crash-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.txt"
    for directory in (state / "prefect-cancel-doctor", Path(tempfile.gettempdir())):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / name
            path.write_text(text)
            return str(path)
        except OSError:
            continue
    return "nowhere (no writable directory)"
