"""The command line: flags → Options → engine → renderer → exit code. No logic here.

Only typer, the standard library and the format enums (`render`, which imports
nothing else) load at module level, so `--help` starts fast; the engine, httpx
and rich load inside the commands.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperCommand, TyperOption

from prefect_cancel_doctor.render import Format, HealthFormat

if TYPE_CHECKING:
    from prefect_cancel_doctor.engine import Options, ProgressFn
    from prefect_cancel_doctor.health import HealthOptions
    from prefect_cancel_doctor.model import Report
    from prefect_cancel_doctor.prefect_api import PrefectApi

EXIT_CODES = """\
Exit codes: 0 nothing stuck; 1 stuck runs or orphans found; 2 usage or
configuration error; 3 Prefect API unreachable or refused the request;
4 internal error (a bug: the traceback is written to a file); 130 interrupted."""

app = typer.Typer(
    name="prefect-cancel-doctor",
    help="Why won't this Prefect flow run cancel? Finds runs stuck in Cancelling, samples "
    "their processes with py-spy and /proc, and names the call that blocks each one.\n\n" + EXIT_CODES,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


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
    Format,
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
    Optional[int],
    typer.Option(
        "--parallel",
        envvar="PCD_PARALLEL",
        min=1,
        max=64,
        help="Processes sampled at once.",
        show_default="the number of CPUs, at most 4",
    ),
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


def parse_duration(value: str, param_hint: str = "--since") -> timedelta:
    """A duration flag ('90s', '30m', '1h', '2d') → timedelta; a usage error otherwise."""
    from prefect_cancel_doctor.durations import parse_duration as parse

    try:
        return parse(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=param_hint) from exc


def _options(
    samples: int,
    interval: float,
    native: bool,
    locals_: bool,
    parallel: int | None,
    timeout: float,
    since: str = "1h",
) -> Options:
    from prefect_cancel_doctor.engine import Options, default_parallel

    return Options(
        samples=samples,
        interval=interval,
        native=native,
        locals=locals_,
        parallel=parallel or default_parallel(),
        timeout=timeout,
        since=parse_duration(since),
    )


def _api(api_url: str | None, api_key: str | None, profile: str | None) -> PrefectApi:
    from prefect_cancel_doctor.prefect_api import PrefectApi
    from prefect_cancel_doctor.settings import resolve_connection

    return PrefectApi(resolve_connection(api_url, api_key, profile))


def _progress() -> tuple[ProgressFn, Callable[[], None]]:
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


def _emit(report: Report, fmt: Format, color: bool | None) -> int:
    from prefect_cancel_doctor.errors import EXIT_OK, EXIT_STUCK
    from prefect_cancel_doctor.render import render

    render(report, fmt, sys.stdout, color=color)
    return EXIT_STUCK if report.needs_attention else EXIT_OK


def _run(fmt: Format, color: bool | None, work: Callable[[ProgressFn], Report]) -> None:
    """Run `work(progress) -> Report`, render it, exit with the right code."""
    from prefect_cancel_doctor.errors import DoctorError

    progress, stop = _progress()
    try:
        with _interruptible():
            report = work(progress)
    except DoctorError as exc:
        stop()
        _fail(exc)
    stop()
    raise typer.Exit(_emit(report, fmt, color))


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C ends the command with exit code 130 and one line (click would say 1, "stuck runs")."""
    from prefect_cancel_doctor.errors import EXIT_INTERRUPTED

    try:
        yield
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None


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
    fmt: FormatOpt = Format.TERMINAL,
    samples: Samples = 5,
    interval: Interval = 0.2,
    native: Native = True,
    locals_: Locals = False,
    since: Since = "1h",
    parallel: Parallel = None,
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
    fmt: FormatOpt = Format.TERMINAL,
    samples: Samples = 5,
    interval: Interval = 0.2,
    native: Native = True,
    locals_: Locals = False,
    parallel: Parallel = None,
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
        Optional[int],
        typer.Option("--pid", help="Diagnose this process directly, without the Prefect API."),
    ] = None,
    container: Annotated[
        Optional[str],
        typer.Option(
            "--container",
            help="Diagnose this Docker container (id or name), without the Prefect API.",
            show_default=False,
        ),
    ] = None,
    fmt: FormatOpt = Format.TERMINAL,
    samples: Samples = 5,
    interval: Interval = 0.2,
    native: Native = True,
    locals_: Locals = False,
    timeout: Timeout = 10.0,
    color: Color = None,
) -> None:
    """Diagnose a process or container you already know (the flow process, a survivor, a container)."""
    if (pid is None) == (container is None):
        _fail(_usage("give exactly one of --pid PID or --container ID|NAME"))
    options = _options(samples, interval, native, locals_, 4, timeout)

    def work(progress: ProgressFn) -> Report:
        from prefect_cancel_doctor.engine import inspect_container, inspect_pid

        if container is not None:
            return inspect_container(container, options, progress)
        assert pid is not None
        return inspect_pid(pid, options, progress)

    _run(fmt, color, work)


@app.command()
def demo(
    fmt: FormatOpt = Format.TERMINAL,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the server and stuck runs up until Enter is pressed.")
    ] = False,
    docker: Annotated[
        bool,
        typer.Option(
            "--docker",
            help="Stick the runs in containers of a real prefect-docker worker (needs a Docker engine).",
        ),
    ] = False,
    color: Color = None,
) -> None:
    """Start a local Prefect server, get real flows stuck in Cancelling, and diagnose them."""
    from prefect_cancel_doctor.demo.run import run_demo

    raise typer.Exit(run_demo(fmt.value, keep=keep, docker=docker, color=color))


def _usage(message: str) -> Exception:
    from prefect_cancel_doctor.errors import ConfigurationError

    return ConfigurationError(message)


# -- report and schedule: the fleet health report -------------------------------------

REPORT_EXIT_CODES = """\
Exit codes: 0 healthy (no --fail-on rule breached); 1 a rule is breached (named on
stderr); 2 usage or configuration error; 3 Prefect API unreachable or refused the request."""

FAIL_ON_HELP = "Exit 1 when a rule is breached; repeat it or separate rules with commas."


class _RulesInHelp(TyperCommand):
    """`report` and `schedule`: --fail-on's help ends with `health.RULES_HELP`, imported only to show it."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from prefect_cancel_doctor.health import RULES_HELP

        for param in self.params:
            if isinstance(param, TyperOption) and param.name == "fail_on":
                # "\b": click keeps the paragraph's lines as they are, one rule a line.
                param.help = "\n\n".join((FAIL_ON_HELP, "\b\n" + "\n".join(RULES_HELP)))
        super().format_help(ctx, formatter)


ReportSince = Annotated[
    str,
    typer.Option(
        "--since", envvar="PCD_REPORT_SINCE", help="The window: cancels requested within it (e.g. 24h, 7d)."
    ),
]
FailOn = Annotated[
    Optional[list[str]],
    typer.Option("--fail-on", envvar="PCD_FAIL_ON", help=FAIL_ON_HELP, show_default=False),
]
Slow = Annotated[
    str,
    typer.Option("--slow", envvar="PCD_REPORT_SLOW", help="A cancel slower than this counts as resisting."),
]
Top = Annotated[
    int,
    typer.Option("--top", envvar="PCD_REPORT_TOP", min=1, max=10000, help="Rows per table (JSON has all)."),
]


def _health_options(
    since: str,
    slow: str,
    top: int,
    sample: bool,
    fail_on: list[str] | None,
    scan_options: Options,
) -> HealthOptions:
    from prefect_cancel_doctor.health import OptionError, parse_health_options

    try:
        return parse_health_options(
            since=since, slow=slow, top=top, sample=sample, fail_on=fail_on or (), scan=scan_options
        )
    except OptionError as exc:
        raise typer.BadParameter(str(exc), param_hint="--" + exc.parameter.replace("_", "-")) from None


@app.command(cls=_RulesInHelp, epilog=REPORT_EXIT_CODES)
def report(
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    profile: Profile = None,
    since: ReportSince = "24h",
    fmt: Annotated[
        HealthFormat,
        typer.Option(
            "--format",
            "-f",
            envvar="PCD_REPORT_FORMAT",
            help="terminal (rich), markdown, html (one self-contained page with charts) or json.",
        ),
    ] = HealthFormat.TERMINAL,
    output: Annotated[
        Optional[str],
        typer.Option(
            "--output",
            "-o",
            envvar="PCD_REPORT_OUTPUT",
            help="Write the report to this file (atomically, once it is complete) instead of stdout.",
            show_default=False,
        ),
    ] = None,
    fail_on: FailOn = None,
    slow: Slow = "60s",
    top: Top = 10,
    sample: Annotated[
        bool,
        typer.Option(
            "--sample/--no-sample",
            envvar="PCD_REPORT_SAMPLE",
            help="Sample the stuck runs' processes on this host (else locate them from the API only).",
        ),
    ] = True,
    samples: Samples = 3,
    interval: Interval = 0.2,
    native: Native = True,
    parallel: Parallel = None,
    timeout: Timeout = 10.0,
    color: Color = None,
) -> None:
    """Cancellation across the fleet over a window: time to cancel, stuck runs, orphans, alerts."""
    options = _health_options(
        since,
        slow,
        top,
        sample,
        fail_on,
        _options(samples, interval, native, False, parallel, timeout, since),
    )
    from prefect_cancel_doctor.errors import EXIT_OK, EXIT_STUCK, DoctorError
    from prefect_cancel_doctor.health import build_health_report
    from prefect_cancel_doctor.render.health import render_health, write_health

    progress, stop = _progress()
    try:
        with _interruptible(), _api(api_url, api_key, profile) as api:
            health = build_health_report(api, options, progress)
    except DoctorError as exc:
        stop()
        _fail(exc)
    stop()
    if output:
        try:
            write_health(health, fmt, output, color=color)
        except OSError as exc:
            _fail(_usage(f"cannot write {output}: {exc.strerror or exc}"))
        typer.echo(f"report written to {output}", err=True)
    else:
        render_health(health, fmt, sys.stdout, color=color)
    for breach in health.breaches:
        typer.echo(f"breached: {breach.rule}: {breach.message}", err=True)
    raise typer.Exit(EXIT_STUCK if health.breaches else EXIT_OK)


@app.command(cls=_RulesInHelp)
def schedule(
    cron: Annotated[
        str,
        typer.Option(
            "--cron", envvar="PCD_SCHEDULE_CRON", help='When to run the report, e.g. "*/15 * * * *".'
        ),
    ],
    name: Annotated[
        str, typer.Option("--name", envvar="PCD_SCHEDULE_NAME", help="Name of the served deployment.")
    ] = "fleet",
    timezone: Annotated[
        Optional[str],
        typer.Option("--timezone", envvar="PCD_SCHEDULE_TIMEZONE", help="Time zone of --cron (default UTC)."),
    ] = None,
    since: ReportSince = "24h",
    fail_on: FailOn = None,
    notify: Annotated[
        Optional[str],
        typer.Option(
            "--notify",
            envvar="PCD_NOTIFY",
            help="Notification block told when a rule is breached, as type/name (e.g. slack-webhook/oncall).",
            show_default=False,
        ),
    ] = None,
    sample: Annotated[
        bool,
        typer.Option(
            "--sample/--no-sample",
            envvar="PCD_SCHEDULE_SAMPLE",
            help="Sample stuck runs' processes (only where the flow runs on their host).",
        ),
    ] = False,
    slow: Slow = "60s",
    top: Top = 10,
    fail_run: Annotated[
        bool,
        typer.Option(
            "--fail-run/--no-fail-run",
            envvar="PCD_SCHEDULE_FAIL_RUN",
            help="End the report's flow run Failed when a rule is breached.",
        ),
    ] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    profile: Profile = None,
) -> None:
    """Serve the report as a Prefect flow on a cron schedule (Markdown artifact, notification)."""
    import os

    from prefect_cancel_doctor.errors import DoctorError
    from prefect_cancel_doctor.settings import resolve_connection

    _health_options(since, slow, top, sample, fail_on, _options(3, 0.2, True, False, 4, 10.0, since))
    try:
        connection = resolve_connection(api_url, api_key, profile)
    except DoctorError as exc:
        _fail(exc)
    # Prefect reads its settings when it is imported: point it at the same API first.
    os.environ["PREFECT_API_URL"] = connection.api_url
    if connection.api_key:
        os.environ["PREFECT_API_KEY"] = connection.api_key
    if connection.auth_string:
        os.environ["PREFECT_API_AUTH_STRING"] = connection.auth_string
    from prefect_cancel_doctor.flows import cron_schedule, notification_block, serve_report

    # Fail now, not at the first scheduled run.
    try:
        cron_schedule(cron, timezone)
        if notify:
            notification_block(notify)
    except ValueError as exc:
        _fail(_usage(str(exc)))
    parameters = {
        "since": since,
        "fail_on": list(fail_on or ()),
        "notify_block": notify,
        "sample": sample,
        "slow": slow,
        "top": top,
        "fail_run_on_breach": fail_run,
    }
    serve_report(cron, name=name, timezone=timezone, parameters=parameters)


def main() -> None:
    """Console-script entry point: every outcome is an exit code of its own, never a traceback.

    typer turns usage errors into exit 2 itself; commands turn Ctrl-C into 130 (`_interruptible`).
    """
    from prefect_cancel_doctor.errors import EXIT_INTERNAL

    try:
        app()
    except Exception as exc:
        where = _write_traceback(exc)
        typer.echo(
            f"internal error: {type(exc).__name__} (a bug in prefect-cancel-doctor); "
            f"traceback written to {where}",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)


def _write_traceback(exc: BaseException) -> str:
    """The traceback, redacted, in the user's state directory (else a temporary file): its path."""
    import os
    import tempfile
    import time
    import traceback
    from pathlib import Path

    from prefect_cancel_doctor.redact import redact_url_passwords

    text = redact_url_passwords("".join(traceback.format_exception(exc)))
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
