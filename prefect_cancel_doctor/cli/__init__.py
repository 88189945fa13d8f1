"""The command line: flags → Options → the library → a renderer → an exit code.

One module per group of commands (`scan`, `act`, `fleet`, `demo`); the flags they share in
`options`, the Prefect connection in `connect`, the one way out (report, error, exit code) in
`output`. Only typer, the standard library and the format enums (`render`, which imports
nothing else) load at module level, so `--help` starts fast; the engine, httpx and rich load
inside the commands.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any

import typer

from prefect_cancel_doctor.cli import act, demo, fleet, scan
from prefect_cancel_doctor.cli.connect import prefect_api as _api
from prefect_cancel_doctor.cli.options import kube as _kube
from prefect_cancel_doctor.cli.output import write_traceback

EXIT_CODES = """\
Exit codes: 0 nothing stuck; 1 stuck runs or orphans found; 2 usage or
configuration error; 3 Prefect API unreachable or refused the request;
4 internal error (a bug: the traceback is written to a file); 5 declined at
resolve's question (nothing was done); 130 interrupted."""

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
    # -h as well as --help, on every command (click's context setting reaches the subcommands).
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


# In the order `--help` lists them.
app.command(epilog=scan.SCAN_EPILOG)(scan.scan)
app.command(epilog=scan.DIAGNOSE_EPILOG)(scan.diagnose)
app.command(epilog=act.RESOLVE_EPILOG)(act.resolve)
app.command(epilog=act.WATCH_EPILOG)(act.watch)
app.command(epilog=scan.INSPECT_EPILOG)(scan.inspect)
app.command(epilog=demo.DEMO_EPILOG)(demo.demo)
app.command(cls=fleet.RulesInHelp, epilog=fleet.REPORT_EPILOG)(fleet.report)
app.command(cls=fleet.RulesInHelp, epilog=fleet.SCHEDULE_EPILOG)(fleet.schedule)
app.command(epilog=fleet.AGENT_EPILOG)(fleet.agent)


def main() -> None:
    """Console-script entry point: every outcome is an exit code of its own, never a traceback.

    a usage error exits 2; commands turn Ctrl-C into 130 (`output.interruptible`).
    """
    from prefect_cancel_doctor.core.redact import ScrubbedStream
    from prefect_cancel_doctor.errors import EXIT_INTERNAL

    # Whatever is printed, a secret the doctor holds is not (redact.scrub): one place for all output.
    sys.stdout, sys.stderr = ScrubbedStream(sys.stdout), ScrubbedStream(sys.stderr)
    try:
        # One program name however it is started (`python -m` too): usage lines and the
        # completion scripts' variable (_PREFECT_CANCEL_DOCTOR_COMPLETE) depend on it.
        code = app(prog_name="prefect-cancel-doctor", standalone_mode=False)
    except _click.ClickException as exc:  # a usage error: said as every other error is, "error: …"
        _show(exc)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    except Exception as exc:
        where = write_traceback(exc)
        typer.echo(
            f"internal error: {type(exc).__name__} (a bug in prefect-cancel-doctor); "
            f"traceback written to {where}",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)


#: The exceptions of the click that typer runs on: click itself, or (typer 0.28) its own copy of it.
_click = importlib.import_module(typer.BadParameter.__module__)


def _show(exc: Any) -> None:
    """Click's account of a usage error (usage line, where to find help), its message after
    "error:" as the doctor's own errors are, not click's "Error:"."""
    help_only: Any = getattr(_click, "NoArgsIsHelpError", ())  # click 8.2+
    if isinstance(exc, help_only):  # no command given: the help, as click shows it
        exc.show()
        return
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        typer.echo(f"{ctx.get_usage()}\nTry '{ctx.command_path} -h' for help.\n", err=True)
    typer.echo(f"error: {exc.format_message()}", err=True)


# `_api`: the one place a command opens the Prefect API (`connect.open_api` reads it here, so a
# test can put a fake Prefect in its place); `_kube` for the tests of the Kubernetes flags.
__all__ = ["EXIT_CODES", "_api", "_kube", "app", "main"]
