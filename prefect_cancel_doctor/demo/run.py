"""`prefect-cancel-doctor demo`: stage real stuck runs, scan them, show the report, clean up.

Three stagings, one scan: local processes of real process workers (the default);
containers of a real prefect-docker worker (`--docker`); or pods (`--kubernetes`):
Docker containers served by `demo.kube_apiserver` (no cluster can be started here)
with everything else real — a local Prefect server, `prefect flow-run execute` or
the engine in each pod, the cancel, py-spy and /proc. The Kubernetes scan runs on
"the node" (this host), so the attach mode chosen is `node`; ``PCD_KUBE_ATTACH=
ephemeral`` samples every pod from an ephemeral container instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.text import Text

from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.demo.harness import HarnessError
from prefect_cancel_doctor.errors import EXIT_OK, EXIT_USAGE, DoctorError
from prefect_cancel_doctor.model import Report
from prefect_cancel_doctor.render import Format, render
from prefect_cancel_doctor.scan.engine import Options, scan

EXIT_INTERRUPTED = 130


def run_demo(
    fmt: str,
    *,
    keep: bool = False,
    docker: bool = False,
    kubernetes: bool = False,
    color: bool | None = None,
) -> int:
    """Run the demo; the report goes to stdout, the narration to stderr."""
    err = Console(stderr=True, highlight=False, no_color=None if color is None else not color)

    def narrate(line: str) -> None:
        err.print(Text(f"demo: {line}", style="dim"))

    try:
        with _stage(docker, kubernetes, narrate) as environment:
            options, where = Options(), environment.api_url
            kubeconfig = getattr(environment, "kubeconfig", None)
            if kubeconfig is not None:
                from prefect_cancel_doctor.demo.kube_harness import DEBUG_IMAGE

                # The demo's own image, for PCD_KUBE_ATTACH=ephemeral, unless the user chose one.
                image = options.kube_debug_image or DEBUG_IMAGE
                options = dataclasses.replace(options, kubeconfig=str(kubeconfig), kube_debug_image=image)
                where += f" with KUBECONFIG={kubeconfig}"
            narrate(f"scanning {where} (prefect-cancel-doctor scan)")
            with PrefectApi(Connection(environment.api_url)) as api:
                report = scan(api, options, lambda what, done, total: None)
            render(report, Format(fmt), sys.stdout, color=color)
            _compare(report, {r.run_id: r.expected_cause.value for r in environment.runs}, err)
            if keep:
                err.print(f"The server stays up at {where}; press Enter to clean up.")
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


def _stage(
    docker: bool, kubernetes: bool, narrate: Callable[[str], None]
) -> contextlib.AbstractContextManager[Any]:
    """The staged environment: each offers .api_url and .runs with .run_id and .expected_cause
    (the Kubernetes one .kubeconfig too). Imported only when chosen: each is heavy."""
    if kubernetes:
        from prefect_cancel_doctor.demo.kube_harness import kube_demo_environment

        return kube_demo_environment(log=narrate)
    if docker:
        from prefect_cancel_doctor.demo.docker_harness import docker_demo_environment

        return docker_demo_environment(log=narrate)
    from prefect_cancel_doctor.demo.environment import run_demo_environment

    return run_demo_environment(console_log=narrate)


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


__all__ = ["run_demo"]
