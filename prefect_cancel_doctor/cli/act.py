"""`resolve` and `watch`: acting on a verdict, following runs until they leave Cancelling."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer

from prefect_cancel_doctor.cli.connect import open_api, with_ui
from prefect_cancel_doctor.cli.options import (
    ApiKey,
    ApiUrl,
    Color,
    DryRun,
    Grace,
    Profile,
    Samples,
    Yes,
    examples,
    scan_options,
)
from prefect_cancel_doctor.cli.output import fail, interruptible, usage

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi
    from prefect_cancel_doctor.model import Diagnosis

RESOLVE_EPILOG = (
    examples(
        "prefect-cancel-doctor resolve crafty-lemur --dry-run",
        "prefect-cancel-doctor resolve crafty-lemur",
        "prefect-cancel-doctor resolve 06e664e5-5fa7-4eba-bb99-2dfc47082c1c --yes --grace 10",
    )
    + "\n\nA doctor that cannot read every process on the host (not root: a partial view) never sets "
    "the state of a run of this host's processes, since a process it cannot read may be the run's: it "
    "ends what it can tie to the run, names what it could not read, and exits 2; --force-state sets the "
    "state anyway, once confirmed on its own."
    + "\n\nThe plan is the command's output, on stdout (`--dry-run > plan.txt` keeps it); the question, "
    "the countdown and what was done go to stderr."
    + "\n\nExit codes: 0 resolved (or the dry-run plan printed); 1 something still runs, the state was "
    "left as it was; 2 refused (no terminal without --yes, a PID reused since the plan, a verdict that "
    "cannot be acted on, a partial view without --force-state); 3 Prefect API error; 5 declined at the "
    "question: nothing was done; 130 interrupted."
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
        fail(usage("give a flow run id or name"))
    options = scan_options(samples, 0.2, False, False, None, 10.0)

    def one(api: PrefectApi) -> list[Diagnosis]:
        from prefect_cancel_doctor.scan.engine import diagnose_run

        return list(diagnose_run(api, run, with_ui(options, api, profile), lambda *_: None).runs)

    resolve_found(api_url, api_key, profile, one, yes, dry_run, grace, force_state=force_state)


def resolve_found(
    api_url: str | None,
    api_key: str | None,
    profile: str | None,
    find: Callable[[PrefectApi], list[Diagnosis]],
    yes: bool,
    dry_run: bool,
    grace: float,
    stuck: Callable[[], bool] = lambda: False,
    force_state: bool = False,
    plan_on_stdout: bool = True,
) -> NoReturn:
    """Diagnose with `find`, then plan, confirm and act (`resolving.resolve_runs`); exit 0/1/2/5.

    `stuck()`: whether something else the command found keeps the exit code at 1. The plan goes to
    stdout (`plan_on_stdout`: it is the command's output), else to stderr with the rest."""
    from prefect_cancel_doctor.act.resolve import Declined
    from prefect_cancel_doctor.act.resolving import countdown, resolve_runs
    from prefect_cancel_doctor.errors import EXIT_OK, EXIT_STUCK, DoctorError

    def wait(what: str, seconds: float, done: Callable[[], bool]) -> bool:
        return countdown(
            what,
            seconds,
            done,
            write=lambda text: typer.echo(text, err=True, nl=False),
            live=sys.stderr.isatty(),
        )

    try:
        with interruptible(), open_api(api_url, api_key, profile) as api:
            unresolved = resolve_runs(
                find(api),
                api,
                yes=yes,
                interactive=sys.stdin.isatty(),
                ask=lambda question: typer.confirm(question, default=False, err=True),
                dry_run=dry_run,
                grace=grace,
                say=lambda line: typer.echo(line, err=True),
                show=lambda line: typer.echo(line, err=not plan_on_stdout),
                wait=wait,
                force_state=force_state,
            )
    except Declined as declined:
        typer.echo(str(declined), err=True)
        raise typer.Exit(declined.exit_code) from None
    except DoctorError as exc:
        fail(exc)
    raise typer.Exit(EXIT_STUCK if unresolved or stuck() else EXIT_OK)


WATCH_EPILOG = examples(
    "prefect-cancel-doctor watch",
    "prefect-cancel-doctor watch crafty-lemur --every 2",
    "prefect-cancel-doctor watch > watch.log   # one line per change when not a terminal",
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
    from prefect_cancel_doctor.act.watch import change_lines, refresher, states_reader
    from prefect_cancel_doctor.act.watch import watch as run_watch
    from prefect_cancel_doctor.errors import DoctorError

    try:
        with interruptible(), open_api(api_url, api_key, profile) as api:
            refresh = refresher(api, scan_options(1, 0.0, False, False, None, 10.0), runs or [])
            if sys.stdout.isatty():
                from prefect_cancel_doctor.render.watch_view import live

                with live(color) as show:
                    run_watch(refresh, states_reader(api), show, every)
            else:
                run_watch(refresh, states_reader(api), change_lines(typer.echo), every)
    except DoctorError as exc:
        fail(exc)
