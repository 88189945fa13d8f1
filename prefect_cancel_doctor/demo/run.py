"""`prefect-cancel-doctor demo`: stage real stuck runs, scan them, show the report, clean up."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from rich.console import Console
from rich.text import Text

from prefect_cancel_doctor.demo.environment import run_demo_environment
from prefect_cancel_doctor.demo.harness import HarnessError
from prefect_cancel_doctor.engine import Options, scan
from prefect_cancel_doctor.errors import EXIT_OK, EXIT_USAGE, DoctorError
from prefect_cancel_doctor.model import Report
from prefect_cancel_doctor.prefect_api import PrefectApi
from prefect_cancel_doctor.render import Format, render
from prefect_cancel_doctor.settings import Connection

EXIT_INTERRUPTED = 130


def run_demo(fmt: str, *, keep: bool = False, docker: bool = False, color: bool | None = None) -> int:
    """Run the demo; the report goes to stdout, the narration to stderr.

    With `docker`, the runs are stuck in containers of a real prefect-docker
    worker (a local image built without any registry) instead of local processes.
    """
    err = Console(stderr=True, highlight=False, no_color=None if color is None else not color)

    def narrate(line: str) -> None:
        err.print(Text(f"demo: {line}", style="dim"))

    try:
        # Both environments offer .api_url and .runs with .run_id and .expected_cause.
        stage: contextlib.AbstractContextManager[Any]
        if docker:
            from prefect_cancel_doctor.demo.docker_harness import docker_demo_environment

            stage = docker_demo_environment(log=narrate)
        else:
            stage = run_demo_environment(console_log=narrate)
        with stage as environment:
            narrate(f"scanning {environment.api_url} (prefect-cancel-doctor scan)")
            with PrefectApi(Connection(environment.api_url)) as api:
                report = scan(api, Options(), lambda what, done, total: None)
            render(report, Format(fmt), sys.stdout, color=color)
            _compare(report, {r.run_id: r.expected_cause.value for r in environment.runs}, err)
            if keep:
                err.print(f"The server stays up at {environment.api_url}; press Enter to clean up.")
                input()
    except KeyboardInterrupt:
        err.print("demo: interrupted; everything it started has been stopped")
        return EXIT_INTERRUPTED
    except DoctorError as exc:
        err.print(Text(f"error: {exc}", style="red"))
        return exc.exit_code
    except HarnessError as exc:
        err.print(Text(f"error: the demo could not stage its runs: {exc}", style="red"))
        return EXIT_USAGE
    return EXIT_OK


def _compare(report: Report, expected: dict[str, str], err: Console) -> None:
    """Say on stderr whether each staged run got the cause the demo staged it for."""
    found = {d.flow_run.id: d.verdict.cause.value for d in report.runs if d.flow_run}
    right = sum(found.get(run_id) == cause for run_id, cause in expected.items())
    err.print(Text(f"demo: {right} of {len(expected)} staged runs diagnosed as staged", style="bold"))
    for run_id, cause in expected.items():
        if found.get(run_id) != cause:
            err.print(
                Text(f"demo:   run {run_id}: staged {cause}, found {found.get(run_id)}", style="yellow")
            )
