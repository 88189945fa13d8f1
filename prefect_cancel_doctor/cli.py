"""The command line: flags → Options → engine → renderer → exit code. No logic here.

Only typer, the standard library and the format enums (`render`, which imports
nothing else) load at module level, so `--help` starts fast; the engine, httpx
and rich load inside the commands.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperCommand, TyperOption

from prefect_cancel_doctor.render import Format, HealthFormat

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi
    from prefect_cancel_doctor.health.options import HealthOptions
    from prefect_cancel_doctor.model import Diagnosis, Report
    from prefect_cancel_doctor.scan.engine import Options, ProgressFn

EXIT_CODES = """\
Exit codes: 0 nothing stuck; 1 stuck runs or orphans found; 2 usage or
configuration error; 3 Prefect API unreachable or refused the request;
4 internal error (a bug: the traceback is written to a file); 130 interrupted."""

app = typer.Typer(
    name="prefect-cancel-doctor",
    help="Why won't this Prefect flow run cancel? Finds runs stuck in Cancelling, samples "
    "their processes with py-spy and /proc, and names the call that blocks each one.\n\n" + EXIT_CODES,
    no_args_is_help=True,
    # --install-completion / --show-completion: typer loads its completion code anyway; the
    # shell is detected only when one of them is used.
    add_completion=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)


def _examples(*lines: str) -> str:
    """A command's epilog: its examples, one a line as written (click's "\\b" keeps them unwrapped)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def _show_version(value: bool) -> None:
    if value:
        from prefect_cancel_doctor import __version__

        typer.echo(f"prefect-cancel-doctor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Why won't this Prefect flow run cancel?"""


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
        "--format",
        "-f",
        envvar="PCD_FORMAT",
        help="terminal (rich), markdown (one section per run, for a ticket) or json "
        "(stdout then holds only JSON).",
    ),
]
Output = Annotated[
    Optional[str],
    typer.Option(
        "--output",
        "-o",
        envvar="PCD_OUTPUT",
        help="Write the report to this file (atomically, once it is complete) instead of stdout.",
        show_default=False,
        metavar="FILE",
    ),
]
Publish = Annotated[
    bool,
    typer.Option(
        "--publish",
        envvar="PCD_PUBLISH",
        help="Publish the verdict of each run this host answers for to Prefect: an event "
        "(prefect-cancel-doctor.verdict) and a Markdown artifact on the run. Without it the "
        "scan changes nothing.",
    ),
]
Fleet = Annotated[
    bool,
    typer.Option(
        "--fleet/--no-fleet",
        envvar="PCD_FLEET",
        help="For runs not found on this host, show the newest verdict another host's doctor published "
        "(agent, scan --publish), marked with that host and its age.",
    ),
]
SamplesDetail = Annotated[
    bool,
    typer.Option(
        "--samples-detail",
        envvar="PCD_SAMPLES_DETAIL",
        help="JSON: every py-spy sample of every process (by default scan, diagnose and inspect keep "
        "each process's latest sample, report only how many were taken).",
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
Deadline = Annotated[
    float,
    typer.Option(
        "--deadline",
        envvar="PCD_DEADLINE",
        min=0.0,
        metavar="SECONDS",
        help="Seconds the whole command may take (0: no limit); past it, it stops with one line and "
        "exit 3. Each request to the Prefect or Kubernetes API may take PCD_REQUEST_DEADLINE seconds "
        "(default 60), retries included, and an answer over PCD_MAX_RESPONSE_MB MiB (default 32) is "
        "refused.",
    ),
]
Yes = Annotated[
    bool, typer.Option("--yes", "-y", help="Act without asking (needed when stdin is not a terminal).")
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")]
Grace = Annotated[
    float,
    typer.Option(
        "--grace",
        envvar="PCD_GRACE",
        min=0.0,
        help="Seconds between SIGTERM and SIGKILL (the Runner's 30 s).",
    ),
]
Color = Annotated[
    Optional[bool],
    typer.Option(
        "--color/--no-color", help="Force colour on or off (NO_COLOR is respected).", show_default=False
    ),
]
Kubeconfig = Annotated[
    Optional[str],
    typer.Option(
        "--kubeconfig",
        envvar="PCD_KUBECONFIG",
        help="Kubernetes runs: this kubeconfig (else KUBECONFIG, ~/.kube/config, in-cluster, as kubectl).",
        show_default=False,
        metavar="FILE",
    ),
]
KubeContext = Annotated[
    Optional[str],
    typer.Option(
        "--context",
        envvar="PCD_KUBE_CONTEXT",
        help="Kubernetes runs: this kubeconfig context (else its current-context).",
        show_default=False,
    ),
]


DebugImage = Annotated[
    Optional[str],
    typer.Option(
        "--debug-image",
        envvar="PCD_KUBE_DEBUG_IMAGE",
        help="Kubernetes runs, ephemeral mode: the image the doctor's ephemeral container runs "
        "(/bin/sh and a static py-spy; the pod's node must be able to pull it).",
        show_default=False,
        metavar="IMAGE",
    ),
]


def _kube(
    options: Options, kubeconfig: str | None, context: str | None, debug_image: str | None = None
) -> Options:
    """`options` with the Kubernetes connection flags; `--debug-image` goes where the pod sampler
    reads it (PCD_KUBE_DEBUG_IMAGE)."""
    import dataclasses
    import os

    if debug_image:  # imported only then: runs not on Kubernetes load no Kubernetes module
        from prefect_cancel_doctor.kinds.kubernetes.locate import DEBUG_IMAGE_ENV

        os.environ[DEBUG_IMAGE_ENV] = debug_image
    return dataclasses.replace(options, kubeconfig=kubeconfig, kube_context=context)


def parse_duration(value: str, param_hint: str = "--since") -> timedelta:
    """A duration flag ('90s', '30m', '1h', '2d') → timedelta; a usage error otherwise."""
    from prefect_cancel_doctor.core.durations import parse_duration as parse

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
    from prefect_cancel_doctor.scan.engine import Options, default_parallel

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
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi
    from prefect_cancel_doctor.clients.settings import resolve_connection

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


def _emit(report: Report, fmt: Format, color: bool | None, output: str | None, samples_detail: bool) -> int:
    from prefect_cancel_doctor.errors import EXIT_OK, EXIT_STUCK
    from prefect_cancel_doctor.render import render, write_report

    if output:
        try:
            write_report(report, fmt, output, color=color, samples_detail=samples_detail)
        except OSError as exc:
            _fail(_usage(f"cannot write {output}: {exc.strerror or exc}"))
        typer.echo(f"report written to {output}", err=True)
    else:
        render(report, fmt, sys.stdout, color=color, samples_detail=samples_detail)
    return EXIT_STUCK if report.needs_attention else EXIT_OK


def _run(
    fmt: Format,
    color: bool | None,
    work: Callable[[ProgressFn], Report],
    output: str | None = None,
    samples_detail: bool = False,
    deadline: float | None = None,
) -> None:
    """Run `work(progress) -> Report` within `deadline` seconds, render it (to `output` if given),
    exit with the right code."""
    from prefect_cancel_doctor.errors import DoctorError

    progress, stop = _progress()
    try:
        with _interruptible(deadline):
            report = work(progress)
    except DoctorError as exc:
        stop()
        _fail(exc)
    stop()
    raise typer.Exit(_emit(report, fmt, color, output, samples_detail))


def _with_ui(options: Options, api: PrefectApi, profile: str | None) -> Options:
    """`options` with the Prefect UI's base URL: PREFECT_UI_URL (environment, else the profile
    the connection came from), else derived from the API URL (`links.ui_base_url`)."""
    import dataclasses
    import os

    from prefect_cancel_doctor.clients.settings import read_profile
    from prefect_cancel_doctor.core.links import ui_base_url

    _, values = read_profile(os.environ, profile)
    return dataclasses.replace(options, ui_url=ui_base_url(api.url, os.environ, values))


def _published(api: PrefectApi, report: Report) -> Report:
    """`scan --publish`: publish the verdicts this host answers for (publish.py). What could not be
    published joins the report's errors and stderr; the verdicts are shown and the exit code kept."""
    import dataclasses

    from prefect_cancel_doctor.fleet.publish import host_name, publish, seen_here

    outcome = publish(api, report, seen=seen_here(host_name()))
    typer.echo(outcome.summary(), err=True)
    for error in outcome.errors:
        typer.echo(f"warning: {error}", err=True)
    return dataclasses.replace(report, errors=(*report.errors, *outcome.errors))


def _with_fleet(api: PrefectApi, report: Report) -> Report:
    """The fleet's verdicts for the runs not found here (fleet.py); the runs no agent answers for, and
    why the fleet could not be read, as notes on stderr."""
    from prefect_cancel_doctor.fleet.protocol import fleet_for_report
    from prefect_cancel_doctor.fleet.publish import host_name

    report, uncovered, problems = fleet_for_report(api, report, host_name())
    for line in (*(u.text for u in uncovered), *problems):
        typer.echo(f"note: {line}", err=True)
    return report


def _point_prefect_at(api_url: str | None, api_key: str | None, profile: str | None) -> None:
    """Export the doctor's connection for Prefect, which reads its settings when it is imported
    (`schedule` and `agent` serve flows with Prefect itself)."""
    import os

    from prefect_cancel_doctor.clients.settings import resolve_connection
    from prefect_cancel_doctor.errors import DoctorError

    try:
        connection = resolve_connection(api_url, api_key, profile)
    except DoctorError as exc:
        _fail(exc)
    os.environ["PREFECT_API_URL"] = connection.api_url
    if connection.api_key:
        os.environ["PREFECT_API_KEY"] = connection.api_key
    if connection.auth_string:
        os.environ["PREFECT_API_AUTH_STRING"] = connection.auth_string


@contextlib.contextmanager
def _interruptible(deadline: float | None = None) -> Iterator[None]:
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
        _fail(deadlines.CommandDeadlineError(message, hint=passed.hint))


def _fail(exc: Exception) -> None:
    from prefect_cancel_doctor.errors import DoctorError

    message = f"error: {exc}"
    hint = getattr(exc, "hint", None)
    if hint:
        message += f"\n\nhint: {hint}"
    typer.echo(message, err=True)
    raise typer.Exit(exc.exit_code if isinstance(exc, DoctorError) else 2)


@app.command(
    epilog=_examples(
        "prefect-cancel-doctor scan",
        "prefect-cancel-doctor scan --since 24h --no-native",
        "prefect-cancel-doctor scan --format markdown -o stuck.md",
        "prefect-cancel-doctor scan --publish    # verdicts as Prefect events, an artifact on each run",
        "prefect-cancel-doctor scan --format json | jq '.runs[] | {name: .flow_run.name, ui: .ui_url}'",
    )
)
def scan(
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    profile: Profile = None,
    fmt: FormatOpt = Format.TERMINAL,
    output: Output = None,
    samples_detail: SamplesDetail = False,
    publish: Publish = False,
    fleet: Fleet = True,
    samples: Samples = 5,
    interval: Interval = 0.2,
    native: Native = True,
    locals_: Locals = False,
    since: Since = "1h",
    parallel: Parallel = None,
    timeout: Timeout = 10.0,
    deadline: Deadline = 300.0,
    color: Color = None,
    resolve_orphans: Annotated[
        bool,
        typer.Option(
            "--resolve-orphans",
            help="Then end the processes of runs already final (orphans), as `resolve` does: plan, "
            "confirm, act, verify.",
        ),
    ] = False,
    yes: Yes = False,
    dry_run: DryRun = False,
    grace: Grace = 30.0,
    kubeconfig: Kubeconfig = None,
    context: KubeContext = None,
    debug_image: DebugImage = None,
) -> None:
    """Find every run stuck in Cancelling (and orphans), sample it, say why it is stuck."""
    options = _kube(
        _options(samples, interval, native, locals_, parallel, timeout, since),
        kubeconfig,
        context,
        debug_image,
    )
    if resolve_orphans:
        from prefect_cancel_doctor.model import FINAL_STATES
        from prefect_cancel_doctor.scan.engine import scan as run_scan

        still_cancelling: list[Diagnosis] = []

        def orphans(api: PrefectApi) -> list[Diagnosis]:
            report = run_scan(api, _with_ui(options, api, profile), lambda *_: None)
            _emit(report, fmt, color, output, samples_detail)
            final = [d for d in report.runs if d.flow_run and d.flow_run.state_type in FINAL_STATES]
            still_cancelling.extend(d for d in report.runs if d not in final)
            return final

        # Stuck runs still in Cancelling keep the scan's exit code 1: resolving orphans hides none.
        _resolve(
            api_url, api_key, profile, orphans, yes, dry_run, grace, stuck=lambda: bool(still_cancelling)
        )
        return

    def work(progress: ProgressFn) -> Report:
        from prefect_cancel_doctor.scan.engine import scan as run_scan

        with _api(api_url, api_key, profile) as api:
            report = run_scan(api, _with_ui(options, api, profile), progress)
            report = _published(api, report) if publish else report
            return _with_fleet(api, report) if fleet else report

    _run(fmt, color, work, output, samples_detail, deadline)


@app.command(
    epilog=_examples(
        "prefect-cancel-doctor diagnose crafty-lemur",
        "prefect-cancel-doctor diagnose 06e664e5-5fa7-4eba-bb99-2dfc47082c1c --locals",
        "prefect-cancel-doctor diagnose crafty-lemur --format markdown -o ticket.md",
        "prefect-cancel-doctor diagnose crafty-lemur --format json --samples-detail > run.json",
    )
)
def diagnose(
    run: Annotated[
        str,
        typer.Argument(
            help="The flow run's id, or its name as `scan` shows it (e.g. crafty-lemur); any state.",
            metavar="RUN",
            show_default=False,
        ),
    ],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    profile: Profile = None,
    fmt: FormatOpt = Format.TERMINAL,
    output: Output = None,
    samples_detail: SamplesDetail = False,
    samples: Samples = 5,
    interval: Interval = 0.2,
    native: Native = True,
    locals_: Locals = False,
    parallel: Parallel = None,
    timeout: Timeout = 10.0,
    deadline: Deadline = 300.0,
    color: Color = None,
    kubeconfig: Kubeconfig = None,
    context: KubeContext = None,
    debug_image: DebugImage = None,
) -> None:
    """Diagnose one flow run, by id or by name (several runs with that name: they are listed, exit 2)."""
    if not run.strip():
        _fail(_usage("give a flow run id or name"))
    options = _kube(
        _options(samples, interval, native, locals_, parallel, timeout), kubeconfig, context, debug_image
    )

    def work(progress: ProgressFn) -> Report:
        from prefect_cancel_doctor.scan.engine import diagnose_run

        with _api(api_url, api_key, profile) as api:
            return diagnose_run(api, run, _with_ui(options, api, profile), progress)

    _run(fmt, color, work, output, samples_detail, deadline)


@app.command(
    epilog=_examples(
        "prefect-cancel-doctor resolve crafty-lemur --dry-run",
        "prefect-cancel-doctor resolve crafty-lemur",
        "prefect-cancel-doctor resolve 06e664e5-5fa7-4eba-bb99-2dfc47082c1c --yes --grace 10",
    )
    + "\n\nA doctor that cannot read every process on the host (not root: a partial view) never sets "
    "the state of a run of this host's processes, since a process it cannot read may be the run's: it "
    "ends what it can tie to the run, names what it could not read, and exits 2; --force-state sets the "
    "state anyway, once confirmed on its own."
    + "\n\nExit codes: 0 resolved (or the dry-run plan printed); 1 something still runs, the state was "
    "left as it was; 2 refused (no terminal without --yes, a PID reused since the plan, a verdict that "
    "cannot be acted on, a partial view without --force-state); 3 Prefect API error; 130 interrupted."
)
def resolve(
    run: Annotated[
        str,
        typer.Argument(help="The flow run's id or name.", metavar="RUN", show_default=False),
    ],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    profile: Profile = None,
    yes: Yes = False,
    dry_run: DryRun = False,
    grace: Grace = 30.0,
    samples: Samples = 3,
    force_state: Annotated[
        bool,
        typer.Option(
            "--force-state",
            help="Set the run's state to Cancelled even on a partial view (this doctor cannot read every "
            "process here, so the run may still run in one of them). Asked as a question of its own on a "
            "terminal; with --yes, this flag is the confirmation.",
        ),
    ] = False,
) -> None:
    """Finish a stuck cancellation: diagnose, show the plan, confirm, end the run's processes
    (SIGTERM, grace, SIGKILL; a container's engine, then docker stop, then docker kill), verify
    they are gone, then mark the run Cancelled. Every action is logged as a JSON line."""
    if not run.strip():
        _fail(_usage("give a flow run id or name"))
    options = _options(samples, 0.2, False, False, None, 10.0)

    def one(api: PrefectApi) -> list[Diagnosis]:
        from prefect_cancel_doctor.scan.engine import diagnose_run

        return list(diagnose_run(api, run, _with_ui(options, api, profile), lambda *_: None).runs)

    _resolve(api_url, api_key, profile, one, yes, dry_run, grace, force_state=force_state)


def _resolve(
    api_url: str | None,
    api_key: str | None,
    profile: str | None,
    find: Callable[[PrefectApi], list[Diagnosis]],
    yes: bool,
    dry_run: bool,
    grace: float,
    stuck: Callable[[], bool] = lambda: False,
    force_state: bool = False,
) -> None:
    """Diagnose with `find`, then plan, confirm and act (`resolve.resolve_diagnosed`); exit 0/1/2.

    `stuck()`: whether something else the command found keeps the exit code at 1. `force_state`:
    set a state on a partial view too, once confirmed on its own (`--yes` with the flag: confirmed)."""
    from prefect_cancel_doctor.act.resolve import Plan, resolve_diagnosed
    from prefect_cancel_doctor.errors import EXIT_OK, EXIT_STUCK, DoctorError

    def confirm() -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            _fail(_usage("refusing to act without confirmation: stdin is not a terminal; pass --yes"))
        return typer.confirm("Carry out this plan?", default=False, err=True)

    def confirm_force(plans: list[Plan]) -> bool:
        if yes:
            return True
        names = ", ".join(plan.run_name for plan in plans)
        question = (
            f"This doctor cannot read every process on this host (see the note above): {names} may still "
            "run in one of them. Set the state to Cancelled anyway?"
        )
        return typer.confirm(question, default=False, err=True)

    try:
        with _interruptible(), _api(api_url, api_key, profile) as api:
            done = resolve_diagnosed(
                find(api),
                api,
                confirm=confirm,
                dry_run=dry_run,
                grace=grace,
                say=lambda line: typer.echo(line, err=True),
                wait=_countdown,
                force_state=force_state,
                confirm_force=confirm_force,
            )
    except DoctorError as exc:
        _fail(exc)
    unresolved = [plan.run_name for plan, outcome in done if outcome is not None and not outcome.resolved]
    raise typer.Exit(EXIT_STUCK if unresolved or stuck() else EXIT_OK)


def _countdown(what: str, seconds: float, done: Callable[[], bool]) -> bool:
    """Wait until `done()` or `seconds` pass, with the seconds left shown on a terminal."""
    import time

    deadline = time.monotonic() + seconds
    shown = -1
    while not done() and time.monotonic() < deadline:
        left = int(deadline - time.monotonic()) + 1
        if sys.stderr.isatty() and left != shown:
            typer.echo(f"\r  {what}: {left:3d} s left ", err=True, nl=False)
        elif shown == -1:
            typer.echo(f"  {what} (up to {seconds:.0f} s)", err=True)
        shown = left
        time.sleep(0.2)
    if sys.stderr.isatty() and shown != -1:
        typer.echo("", err=True)
    return done()


@app.command(
    epilog=_examples(
        "prefect-cancel-doctor watch",
        "prefect-cancel-doctor watch crafty-lemur --every 2",
        "prefect-cancel-doctor watch > watch.log   # one line per change when not a terminal",
    )
)
def watch(
    runs: Annotated[
        Optional[list[str]],
        typer.Argument(
            help="Runs to watch, by id or name (default: every run in Cancelling).", metavar="[RUN]..."
        ),
    ] = None,
    every: Annotated[
        float, typer.Option("--every", envvar="PCD_WATCH_EVERY", min=0.5, help="Seconds between refreshes.")
    ] = 5.0,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    profile: Profile = None,
    color: Color = None,
) -> None:
    """Watch stuck runs live: cause, blocking call, whether it moved, SIGTERM state, and the moment
    each run leaves Cancelling. Each refresh takes one plain py-spy dump per process. Ctrl-C quits."""
    import time

    from prefect_cancel_doctor.act.watch import Row, changes, refresher, states_reader
    from prefect_cancel_doctor.act.watch import watch as run_watch
    from prefect_cancel_doctor.errors import DoctorError

    shown: dict[str, Row] = {}

    def lines(view: dict[str, Row]) -> None:
        for line in changes(shown, view):
            typer.echo(f"{time.strftime('%H:%M:%S')} {line}")
        shown.clear()
        shown.update(view)

    try:
        with _interruptible(), _api(api_url, api_key, profile) as api:
            refresh = refresher(api, _options(1, 0.0, False, False, None, 10.0), runs or [])
            if sys.stdout.isatty():
                from prefect_cancel_doctor.render.watch_view import live

                with live(color) as show:
                    run_watch(refresh, states_reader(api), show, every)
            else:
                run_watch(refresh, states_reader(api), lines, every)
    except DoctorError as exc:
        _fail(exc)


@app.command(
    epilog=_examples(
        "prefect-cancel-doctor inspect --pid 12345",
        "prefect-cancel-doctor inspect --container etl-7",
        "prefect-cancel-doctor inspect --pid 12345 --format markdown -o ticket.md",
        "prefect-cancel-doctor inspect --pod prod/etl-x7k2p-abcde   # a Kubernetes pod, by kubeconfig",
        "prefect-cancel-doctor inspect --pid 1        # in a debug container sharing a pod's PIDs",
    )
)
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
    pod: Annotated[
        Optional[str],
        typer.Option(
            "--pod",
            help="Diagnose this Kubernetes pod (NAMESPACE/NAME, or NAME in the context's namespace), "
            "without the Prefect API.",
            show_default=False,
        ),
    ] = None,
    any_process: Annotated[
        bool,
        typer.Option(
            "--any-process",
            help="Sample --pid even when it is no Prefect flow (else: exit 2, saying so).",
        ),
    ] = False,
    fmt: FormatOpt = Format.TERMINAL,
    output: Output = None,
    samples_detail: SamplesDetail = False,
    samples: Samples = 5,
    interval: Interval = 0.2,
    native: Native = True,
    locals_: Locals = False,
    timeout: Timeout = 10.0,
    deadline: Deadline = 300.0,
    color: Color = None,
    kubeconfig: Kubeconfig = None,
    context: KubeContext = None,
    debug_image: DebugImage = None,
) -> None:
    """Diagnose a process, container or pod you already know (the flow process, a survivor, a pod).

    A --pid that is no Prefect flow (no flow engine, Runner or PREFECT__FLOW_RUN_ID
    in it or its children, no flow engine in its stacks) is refused with exit 2."""
    if [pid is not None, container is not None, pod is not None].count(True) != 1:
        _fail(_usage("give exactly one of --pid PID, --container ID|NAME or --pod NAMESPACE/NAME"))
    options = _kube(
        _options(samples, interval, native, locals_, 4, timeout), kubeconfig, context, debug_image
    )

    def work(progress: ProgressFn) -> Report:
        from prefect_cancel_doctor.scan.engine import inspect_container, inspect_pid, inspect_pod

        if pod is not None:
            return inspect_pod(pod, options, progress)
        if container is not None:
            return inspect_container(container, options, progress)
        assert pid is not None
        return inspect_pid(pid, options, progress, any_process=any_process)

    _run(fmt, color, work, output, samples_detail, deadline)


@app.command(
    epilog=_examples(
        "prefect-cancel-doctor demo",
        "prefect-cancel-doctor demo --keep        # leave the server and stuck runs up until Enter",
        "prefect-cancel-doctor demo --docker      # the runs in containers of a prefect-docker worker",
        "prefect-cancel-doctor demo --kubernetes  # the runs in pods behind a fixture Kubernetes API",
    )
)
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
    kubernetes: Annotated[
        bool,
        typer.Option(
            "--kubernetes",
            help="Stick the runs in pods: Docker containers behind a Kubernetes API fixture (needs Docker).",
        ),
    ] = False,
    color: Color = None,
) -> None:
    """Start a local Prefect server, get real flows stuck in Cancelling, and diagnose them."""
    if docker and kubernetes:
        _fail(_usage("--docker and --kubernetes stage the runs in different places: choose one"))
    from prefect_cancel_doctor.demo.run import run_demo

    raise typer.Exit(run_demo(fmt.value, keep=keep, docker=docker, kubernetes=kubernetes, color=color))


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
        from prefect_cancel_doctor.health.rules import RULES_HELP

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
    from prefect_cancel_doctor.health.options import OptionError, parse_health_options

    try:
        return parse_health_options(
            since=since, slow=slow, top=top, sample=sample, fail_on=fail_on or (), scan=scan_options
        )
    except OptionError as exc:
        raise typer.BadParameter(str(exc), param_hint="--" + exc.parameter.replace("_", "-")) from None


@app.command(
    cls=_RulesInHelp,
    epilog=_examples(
        "prefect-cancel-doctor report --since 24h",
        "prefect-cancel-doctor report --since 7d --format html -o health.html",
        "prefect-cancel-doctor report --format markdown -o health.md",
        "prefect-cancel-doctor report --no-sample --fail-on stuck-older-than=15m,p95-above=2m,orphans",
    )
    + "\n\n"
    + REPORT_EXIT_CODES,
)
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
    deadline: Deadline = 300.0,
    samples_detail: SamplesDetail = False,
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
    from prefect_cancel_doctor.health.build import build_health_report
    from prefect_cancel_doctor.health.render import render_health, write_health

    progress, stop = _progress()
    try:
        with _interruptible(deadline), _api(api_url, api_key, profile) as api:
            health = build_health_report(api, options, progress)
    except DoctorError as exc:
        stop()
        _fail(exc)
    stop()
    if output:
        try:
            write_health(health, fmt, output, color=color, samples_detail=samples_detail)
        except OSError as exc:
            _fail(_usage(f"cannot write {output}: {exc.strerror or exc}"))
        typer.echo(f"report written to {output}", err=True)
    else:
        render_health(health, fmt, sys.stdout, color=color, samples_detail=samples_detail)
    for breach in health.breaches:
        typer.echo(f"breached: {breach.rule}: {breach.message}", err=True)
    raise typer.Exit(EXIT_STUCK if health.breaches else EXIT_OK)


@app.command(
    cls=_RulesInHelp,
    epilog=_examples(
        'prefect-cancel-doctor schedule --cron "*/15 * * * *" --fail-on orphans '
        "--notify slack-webhook/oncall",
    ),
)
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

    _health_options(since, slow, top, sample, fail_on, _options(3, 0.2, True, False, 4, 10.0, since))
    _point_prefect_at(api_url, api_key, profile)
    from prefect_cancel_doctor.health.flow import cron_schedule, notification_block, serve_report

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


@app.command(
    epilog=_examples(
        "prefect-cancel-doctor agent                # serves prefect-cancel-doctor-agent/<host>",
        "prefect-cancel-doctor agent --interval 2m --host node-7",
        'prefect-cancel-doctor agent --cron "*/5 * * * *"',
        "prefect-cancel-doctor agent --once         # one scan and publication now, no serving",
    ),
)
def agent(
    interval: Annotated[
        str,
        typer.Option("--interval", envvar="PCD_AGENT_INTERVAL", help="How often to scan (e.g. 1m, 5m)."),
    ] = "5m",
    cron: Annotated[
        Optional[str],
        typer.Option(
            "--cron",
            envvar="PCD_AGENT_CRON",
            help='Scan on this cron schedule instead of --interval, e.g. "*/5 * * * *".',
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        Optional[str],
        typer.Option(
            "--host",
            envvar="PCD_HOST",
            help="This host's name: its deployment's name and its events' resource (else the hostname; "
            "in a DaemonSet, the node's name).",
            show_default=False,
        ),
    ] = None,
    artifacts: Annotated[
        bool,
        typer.Option(
            "--artifacts/--no-artifacts",
            envvar="PCD_AGENT_ARTIFACTS",
            help="Also write a Markdown artifact on each run (else events only).",
        ),
    ] = True,
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="Scan and publish once, now, without serving (for cron, systemd timers, CronJobs); "
            "exit code as `scan`.",
        ),
    ] = False,
    samples: Samples = 3,
    since: Since = "1h",
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    profile: Profile = None,
) -> None:
    """Serve this host's doctor as a Prefect deployment that scans what runs here and publishes it."""
    import os

    parse_duration(since)
    if host:
        # The flow runs (subprocesses of the Runner) read it too.
        os.environ["PCD_HOST"] = host
    if once:
        import dataclasses

        from prefect_cancel_doctor.fleet.publish import scan_and_publish

        def work(progress: ProgressFn) -> Report:
            with _api(api_url, api_key, profile) as api:
                report, outcome = scan_and_publish(api, samples=samples, since=since, artifacts=artifacts)
            typer.echo(outcome.summary(), err=True)
            for error in outcome.errors:
                typer.echo(f"warning: {error}", err=True)
            return dataclasses.replace(report, errors=(*report.errors, *outcome.errors))

        _run(Format.TERMINAL, None, work)
    _point_prefect_at(api_url, api_key, profile)
    try:
        from prefect_cancel_doctor.agent import schedule_of, serve_agent
    except ImportError as exc:
        _fail(
            _usage(
                f"agent serves a Prefect deployment and needs Prefect installed ({exc}): "
                "pip install 'prefect-cancel-doctor[prefect]', or use `agent --once`"
            )
        )
    try:
        schedule_of(interval, cron)
    except ValueError as exc:
        _fail(_usage(str(exc)))
    parameters = {"samples": samples, "since": since, "artifacts": artifacts}
    serve_agent(interval=interval, cron=cron, parameters=parameters)


def main() -> None:
    """Console-script entry point: every outcome is an exit code of its own, never a traceback.

    typer turns usage errors into exit 2 itself; commands turn Ctrl-C into 130 (`_interruptible`).
    """
    from prefect_cancel_doctor.core.redact import ScrubbedStream
    from prefect_cancel_doctor.errors import EXIT_INTERNAL

    # Whatever is printed, a secret the doctor holds is not (redact.scrub): one place for all output.
    sys.stdout, sys.stderr = ScrubbedStream(sys.stdout), ScrubbedStream(sys.stderr)
    try:
        # One program name however it is started (`python -m` too): usage lines and the
        # completion scripts' variable (_PREFECT_CANCEL_DOCTOR_COMPLETE) depend on it.
        app(prog_name="prefect-cancel-doctor")
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
