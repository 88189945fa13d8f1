"""The command line: flags → Options → engine → renderer → exit code. No logic here.

Only typer and the standard library are imported at module level, so `--help`
starts fast; the engine, httpx and rich load inside the commands.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import timedelta
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

if TYPE_CHECKING:
    from prefect_cancel_doctor.engine import Options, ProgressFn
    from prefect_cancel_doctor.model import Report
    from prefect_cancel_doctor.prefect_api import PrefectApi

EXIT_CODES = """\
Exit codes: 0 nothing stuck; 1 stuck runs or orphans found; 2 usage or
configuration error; 3 Prefect API unreachable or refused the request."""

app = typer.Typer(
    name="prefect-cancel-doctor",
    help="Why won't this Prefect flow run cancel? Finds runs stuck in Cancelling, samples "
    "their processes with py-spy and /proc, and names the call that blocks each one.\n\n" + EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


class OutputFormat(str, Enum):
    """Values of --format (mirrors render.Format without importing it)."""

    terminal = "terminal"
    json = "json"


ApiUrl = Annotated[
    Optional[str],
    typer.Option(
        "--api-url",
        envvar="PCD_API_URL",
        help="Prefect API URL (else PREFECT_API_URL, else the active profile).",
        show_default=False,
    ),
]
ApiKey = Annotated[
    Optional[str],
    typer.Option(
        "--api-key",
        envvar="PCD_API_KEY",
        help="Prefect Cloud API key (else PREFECT_API_KEY, else the profile). Never printed.",
        show_default=False,
    ),
]
Profile = Annotated[
    Optional[str],
    typer.Option(
        "--profile", envvar="PCD_PROFILE", help="Prefect profile to read instead of the active one."
    ),
]
FormatOpt = Annotated[
    OutputFormat,
    typer.Option(
        "--format", "-f", envvar="PCD_FORMAT", help="terminal (rich) or json (stdout holds only JSON)."
    ),
]
Samples = Annotated[
    int, typer.Option("--samples", envvar="PCD_SAMPLES", min=1, max=100, help="py-spy dumps per process.")
]
Interval = Annotated[
    float,
    typer.Option("--interval", envvar="PCD_INTERVAL", min=0.0, help="Seconds between dumps of one process."),
]
Native = Annotated[
    bool,
    typer.Option(
        "--native/--no-native",
        envvar="PCD_NATIVE",
        help="Also sample native (C) frames; falls back to Python-only where it fails.",
    ),
]
Locals = Annotated[
    bool,
    typer.Option(
        "--locals",
        envvar="PCD_LOCALS",
        help="Collect stack locals (values of secret-looking names are redacted).",
    ),
]
Parallel = Annotated[
    int, typer.Option("--parallel", envvar="PCD_PARALLEL", min=1, max=64, help="Processes sampled at once.")
]
Timeout = Annotated[
    float,
    typer.Option(
        "--timeout", envvar="PCD_TIMEOUT", min=0.5, help="Hard timeout of one py-spy dump, seconds."
    ),
]
Since = Annotated[
    str,
    typer.Option(
        "--since",
        envvar="PCD_SINCE",
        help="Look for orphans among runs cancelled within this window (e.g. 30m, 1h, 2d).",
    ),
]
Color = Annotated[
    Optional[bool],
    typer.Option(
        "--color/--no-color", help="Force colour on or off (NO_COLOR is respected).", show_default=False
    ),
]


def parse_duration(value: str) -> timedelta:
    """'90s', '30m', '1h', '2d' → timedelta."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", value)
    if not match:
        raise typer.BadParameter(f"{value!r} is not a duration like 30m, 1h or 2d", param_hint="--since")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return timedelta(seconds=number * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


def _options(
    samples: int,
    interval: float,
    native: bool,
    locals_: bool,
    parallel: int,
    timeout: float,
    since: str = "1h",
) -> Options:
    from prefect_cancel_doctor.engine import Options

    return Options(
        samples=samples,
        interval=interval,
        native=native,
        locals=locals_,
        parallel=parallel,
        timeout=timeout,
        since=parse_duration(since),
    )


def _api(api_url: str | None, api_key: str | None, profile: str | None) -> PrefectApi:
    from prefect_cancel_doctor.prefect_api import PrefectApi
    from prefect_cancel_doctor.settings import resolve_connection

    return PrefectApi(resolve_connection(api_url, api_key, profile))


def _progress() -> tuple[ProgressFn, Any]:
    """A spinner on stderr (silent when stderr is not a terminal)."""
    from rich.console import Console

    console = Console(stderr=True)
    status = console.status("starting", spinner="dots")
    if console.is_terminal:
        status.start()

    def update(what: str, done: int, total: int) -> None:
        status.update(f"{what} {done}/{total}" if total else what)

    return update, status


def _emit(report: Report, fmt: OutputFormat, color: bool | None) -> int:
    from prefect_cancel_doctor.errors import EXIT_OK, EXIT_STUCK
    from prefect_cancel_doctor.render import Format, render

    render(report, Format(fmt.value), sys.stdout, color=color)
    return EXIT_STUCK if report.needs_attention else EXIT_OK


def _run(fmt: OutputFormat, color: bool | None, work: Callable[[ProgressFn], Report]) -> None:
    """Run `work(progress) -> Report`, render it, exit with the right code."""
    from prefect_cancel_doctor.errors import DoctorError

    progress, status = _progress()
    try:
        report = work(progress)
    except DoctorError as exc:
        status.stop()
        _fail(exc)
    status.stop()
    raise typer.Exit(_emit(report, fmt, color))


def _fail(exc: Exception) -> None:
    from prefect_cancel_doctor.errors import DoctorError

    message = f"error: {exc}"
    hint = getattr(exc, "hint", None)
    if hint:
        message += f"\n\nhint: {hint}"
    typer.echo(message, err=True)
    raise typer.Exit(exc.exit_code if isinstance(exc, DoctorError) else 2)


@app.command()
def scan(
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    profile: Profile = None,
    fmt: FormatOpt = OutputFormat.terminal,
    samples: Samples = 5,
    interval: Interval = 0.2,
    native: Native = True,
    locals_: Locals = False,
    since: Since = "1h",
    parallel: Parallel = 4,
    timeout: Timeout = 10.0,
    color: Color = None,
) -> None:
    """Find every run stuck in Cancelling (and orphans), sample it, say why it is stuck."""
    options = _options(samples, interval, native, locals_, parallel, timeout, since)

    def work(progress: ProgressFn) -> Report:
        from prefect_cancel_doctor.engine import scan as run_scan

        with _api(api_url, api_key, profile) as api:
            return run_scan(api, options, progress)

    _run(fmt, color, work)


@app.command()
def diagnose(
    run_id: Annotated[str, typer.Argument(help="The flow run id (any state).")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    profile: Profile = None,
    fmt: FormatOpt = OutputFormat.terminal,
    samples: Samples = 5,
    interval: Interval = 0.2,
    native: Native = True,
    locals_: Locals = False,
    parallel: Parallel = 4,
    timeout: Timeout = 10.0,
    color: Color = None,
) -> None:
    """Diagnose one flow run by id."""
    if not re.fullmatch(r"[0-9a-fA-F-]{32,36}", run_id):
        _fail(_usage(f"{run_id!r} is not a flow run id (a UUID)"))
    options = _options(samples, interval, native, locals_, parallel, timeout)

    def work(progress: ProgressFn) -> Report:
        from prefect_cancel_doctor.engine import diagnose_run

        with _api(api_url, api_key, profile) as api:
            return diagnose_run(api, run_id, options, progress)

    _run(fmt, color, work)


@app.command()
def inspect(
    pid: Annotated[
        int, typer.Option("--pid", help="Diagnose this process directly, without the Prefect API.")
    ],
    fmt: FormatOpt = OutputFormat.terminal,
    samples: Samples = 5,
    interval: Interval = 0.2,
    native: Native = True,
    locals_: Locals = False,
    timeout: Timeout = 10.0,
    color: Color = None,
) -> None:
    """Diagnose a process you already know (the flow process, or a survivor)."""
    options = _options(samples, interval, native, locals_, 4, timeout)

    def work(progress: ProgressFn) -> Report:
        from prefect_cancel_doctor.engine import inspect_pid

        return inspect_pid(pid, options, progress)

    _run(fmt, color, work)


@app.command()
def demo(
    fmt: FormatOpt = OutputFormat.terminal,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the server and stuck runs up until Enter is pressed.")
    ] = False,
    color: Color = None,
) -> None:
    """Start a local Prefect server, get real flows stuck in Cancelling, and diagnose them."""
    from prefect_cancel_doctor.demo.run import run_demo

    raise typer.Exit(run_demo(fmt.value, keep=keep, color=color))


def _usage(message: str) -> Exception:
    from prefect_cancel_doctor.errors import ConfigurationError

    return ConfigurationError(message)


def main() -> None:
    """Console-script entry point."""
    app()
