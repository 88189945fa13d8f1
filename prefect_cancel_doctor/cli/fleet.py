"""`report`, `schedule` and `agent`: the fleet's health report, served on a schedule, and a doctor
on every host."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperCommand, TyperOption

from prefect_cancel_doctor.cli.connect import open_api, point_prefect_at, with_ui
from prefect_cancel_doctor.cli.options import (
    ApiKey,
    ApiUrl,
    Color,
    Deadline,
    Interval,
    Native,
    Parallel,
    Profile,
    Samples,
    SamplesDetail,
    Since,
    Timeout,
    examples,
    output_file_option,
    parse_duration,
    scan_options,
)
from prefect_cancel_doctor.cli.output import collect, fail, published, run_report, usage, write_out
from prefect_cancel_doctor.render import Format, HealthFormat

if TYPE_CHECKING:
    from prefect_cancel_doctor.fleet.autopilot import Autopilot
    from prefect_cancel_doctor.health.model import HealthReport
    from prefect_cancel_doctor.health.options import HealthOptions
    from prefect_cancel_doctor.model import Report
    from prefect_cancel_doctor.scan.engine import Options, ProgressFn

REPORT_EXIT_CODES = """\
Exit codes: 0 healthy (no --fail-on rule breached); 1 a rule is breached (named on
stderr); 2 usage or configuration error; 3 Prefect API unreachable or refused the request."""

FAIL_ON_HELP = "Exit 1 when a rule is breached; repeat it or separate rules with commas."


class RulesInHelp(TyperCommand):
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
    scan: Options,
) -> HealthOptions:
    from prefect_cancel_doctor.health.options import OptionError, parse_health_options

    try:
        return parse_health_options(
            since=since, slow=slow, top=top, sample=sample, fail_on=fail_on or (), scan=scan
        )
    except OptionError as exc:
        raise typer.BadParameter(str(exc), param_hint="--" + exc.parameter.replace("_", "-")) from None


REPORT_EPILOG = (
    examples(
        "prefect-cancel-doctor report --since 24h",
        "prefect-cancel-doctor report --since 7d -o html --output-file health.html",
        "prefect-cancel-doctor report -o markdown --output-file health.md",
        "prefect-cancel-doctor report --no-sample --fail-on stuck-older-than=15m,p95-above=2m,orphans",
    )
    + "\n\n"
    + REPORT_EXIT_CODES
)


def report(
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    profile: Profile = None,
    since: ReportSince = "24h",
    fmt: Annotated[
        HealthFormat,
        typer.Option(
            "--output",
            "-o",
            "--format",
            "-f",
            envvar="PCD_REPORT_FORMAT",
            help="The report's format, as `-o json` in Prefect's and kubectl's CLIs: terminal (rich), "
            "markdown, html (one self-contained page with charts) or json; -f/--format is the same option.",
        ),
    ] = HealthFormat.TERMINAL,
    # PCD_REPORT_OUTPUT: the variable's name from when -o/--output named the file, still read.
    output_file: Annotated[
        Optional[str], output_file_option("PCD_REPORT_OUTPUT_FILE", "PCD_REPORT_OUTPUT")
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
    all_runs: Annotated[
        bool,
        typer.Option(
            "--all-runs",
            envvar="PCD_REPORT_ALL_RUNS",
            help="JSON: list every stuck run and live orphan (by default the first 50 of each, the longest "
            "in Cancelling first, the rest counted under `omitted`; the statistics count them all).",
        ),
    ] = False,
    color: Color = None,
) -> None:
    """Cancellation across the fleet over a window: time to cancel, stuck runs, orphans, alerts."""
    options = _health_options(
        since,
        slow,
        top,
        sample,
        fail_on,
        scan_options(samples, interval, native, False, parallel, timeout, since),
    )
    from prefect_cancel_doctor.errors import EXIT_OK, EXIT_STUCK
    from prefect_cancel_doctor.health.build import build_health_report
    from prefect_cancel_doctor.health.render import render_health, write_health

    def work(progress: ProgressFn) -> HealthReport:
        with open_api(api_url, api_key, profile) as api:
            linked = dataclasses.replace(options, scan=with_ui(options.scan, api, profile))
            return build_health_report(api, linked, progress)

    health = collect(work, deadline)
    write_out(
        output_file,
        lambda path: write_health(
            health, fmt, path, color=color, samples_detail=samples_detail, all_runs=all_runs
        ),
        lambda stream: render_health(
            health, fmt, stream, color=color, samples_detail=samples_detail, all_runs=all_runs
        ),
    )
    for breach in health.breaches:
        typer.echo(f"breached: {breach.rule}: {breach.message}", err=True)
    raise typer.Exit(EXIT_STUCK if health.breaches else EXIT_OK)


SCHEDULE_EPILOG = examples(
    'prefect-cancel-doctor schedule --cron "*/15 * * * *" --fail-on orphans --notify slack-webhook/oncall',
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

    _health_options(since, slow, top, sample, fail_on, scan_options(3, 0.2, True, False, 4, 10.0, since))
    point_prefect_at(api_url, api_key, profile)
    from prefect_cancel_doctor.health.flow import cron_schedule, notification_block, serve_report

    # Fail now, not at the first scheduled run.
    try:
        cron_schedule(cron, timezone)
        if notify:
            notification_block(notify)
    except ValueError as exc:
        fail(usage(str(exc)))
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


AGENT_EPILOG = examples(
    "prefect-cancel-doctor agent                # serves prefect-cancel-doctor-agent/<host>",
    "prefect-cancel-doctor agent --interval 2m --host node-7",
    'prefect-cancel-doctor agent --cron "*/5 * * * *"',
    "prefect-cancel-doctor agent --once         # one scan and publication now, no serving",
    "prefect-cancel-doctor agent --autopilot safe --autopilot-dry-run   # what it would end, published",
    "prefect-cancel-doctor agent --autopilot /etc/prefect-cancel-doctor/autopilot.toml",
)
AGENT_EPILOG += (
    "\n\nThe autopilot is off unless --autopilot names a policy (`safe`, or a TOML or JSON file read "
    "again each cycle). It acts only on this host's processes and containers, never on a partial view "
    "or another host's verdict; the Prefect variable prefect-cancel-doctor-autopilot = off stops every "
    "agent's autopilot at its next cycle."
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
    autopilot: Annotated[
        Optional[str],
        typer.Option(
            "--autopilot",
            envvar="PCD_AUTOPILOT",
            metavar="POLICY",
            help="End, each cycle, the stuck runs this policy allows: `safe` (orphaned_infrastructure, "
            "child_process_survives, infrastructure_gone, never_started at confidence >= 0.9 after 10 "
            "minutes) or a TOML/JSON policy file. Off by default.",
            show_default=False,
        ),
    ] = None,
    autopilot_dry_run: Annotated[
        bool,
        typer.Option(
            "--autopilot-dry-run",
            envvar="PCD_AUTOPILOT_DRY_RUN",
            help="With --autopilot: decide and publish what it would have done, and act on nothing.",
        ),
    ] = False,
    samples: Samples = 3,
    since: Since = "1h",
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    profile: Profile = None,
) -> None:
    """Serve this host's doctor as a Prefect deployment that scans what runs here and publishes it;
    with --autopilot, it also ends the stuck runs its policy allows."""
    from prefect_cancel_doctor.fleet.publish import host_name

    parse_duration(since)
    # Passed on, to the flow runs too (a parameter of the deployment), never through the environment.
    host = host_name({"PCD_HOST": host}) if host else host_name()
    pilot = _autopilot(autopilot, autopilot_dry_run)
    if once:
        from prefect_cancel_doctor.fleet.publish import scan_and_publish

        def work(progress: ProgressFn) -> Report:
            with open_api(api_url, api_key, profile) as api:
                report, outcome = scan_and_publish(
                    api,
                    host=host,
                    samples=samples,
                    since=since,
                    artifacts=artifacts,
                    autopilot=pilot,
                    say=lambda line: typer.echo(line, err=True),
                )
            if outcome.autopilot is not None:
                typer.echo(outcome.autopilot.summary(), err=True)
            return published(report, outcome)

        run_report(Format.TERMINAL, None, work)
    point_prefect_at(api_url, api_key, profile)
    try:
        from prefect_cancel_doctor.agent import schedule_of, serve_agent
    except ImportError as exc:
        fail(
            usage(
                f"agent serves a Prefect deployment and needs Prefect installed ({exc}): "
                "pip install 'prefect-cancel-doctor[prefect]', or use `agent --once`"
            )
        )
    try:
        schedule_of(interval, cron)
    except ValueError as exc:
        fail(usage(str(exc)))
    parameters = {"samples": samples, "since": since, "artifacts": artifacts}
    if pilot is not None:
        import os

        from prefect_cancel_doctor.fleet.autopilot import AUTOPILOT_DRY_RUN_ENV, AUTOPILOT_ENV

        # The policy is the agent's, handed to its flow runs (its own children) through their
        # environment: never a deployment parameter, which a run started from the UI could change.
        spec = (
            autopilot.strip()
            if autopilot and autopilot.strip() == "safe"
            else str(Path(autopilot or "").resolve())
        )
        os.environ[AUTOPILOT_ENV] = spec
        os.environ[AUTOPILOT_DRY_RUN_ENV] = "true" if pilot.dry_run else "false"
        typer.echo(
            f"agent: autopilot on{' (dry run)' if pilot.dry_run else ''}, {pilot.policy.describe()}", err=True
        )
    serve_agent(host=host, interval=interval, cron=cron, parameters=parameters)


def _autopilot(spec: str | None, dry_run: bool) -> Autopilot | None:
    """The autopilot `agent` was asked for, its policy read now (a bad one is a usage error)."""
    if not spec:
        if dry_run:
            fail(usage("--autopilot-dry-run needs --autopilot POLICY (e.g. --autopilot safe)"))
        return None
    from prefect_cancel_doctor.act.policy import PolicyError, load_policy
    from prefect_cancel_doctor.fleet.autopilot import Autopilot

    try:
        return Autopilot(load_policy(spec), dry_run)
    except PolicyError as exc:
        fail(usage(f"--autopilot: {exc}"))
