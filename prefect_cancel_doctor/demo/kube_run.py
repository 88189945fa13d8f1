"""`prefect-cancel-doctor demo --kubernetes`: runs stuck in pods behind the fixture Kubernetes API, diagnosed.

The pods are Docker containers served by `demo.kube_apiserver` (no cluster can be
started here); everything else is real: a local Prefect server, `prefect flow-run
execute` or the engine in each pod, the cancel, py-spy and /proc. The scan runs
on "the node" (this host), so the attach mode chosen is `node`; ``PCD_KUBE_ATTACH=
ephemeral`` samples every pod from an ephemeral container instead.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from rich.console import Console
from rich.text import Text

from prefect_cancel_doctor.demo.harness import HarnessError
from prefect_cancel_doctor.demo.kube_harness import DEBUG_IMAGE, kube_demo_environment
from prefect_cancel_doctor.demo.run import _compare
from prefect_cancel_doctor.engine import Options, scan
from prefect_cancel_doctor.errors import EXIT_OK, EXIT_USAGE, DoctorError
from prefect_cancel_doctor.locate.kubernetes import DEBUG_IMAGE_ENV
from prefect_cancel_doctor.prefect_api import PrefectApi
from prefect_cancel_doctor.render import Format, render
from prefect_cancel_doctor.settings import Connection

EXIT_INTERRUPTED = 130


def run_kube_demo(fmt: str, *, keep: bool = False, color: bool | None = None) -> int:
    """Stage the Kubernetes scenarios, scan them, show the report (stdout) and the narration (stderr)."""
    err = Console(stderr=True, highlight=False, no_color=None if color is None else not color)

    def narrate(line: str) -> None:
        err.print(Text(f"demo: {line}", style="dim"))

    try:
        with kube_demo_environment(log=narrate) as environment:
            os.environ.setdefault(DEBUG_IMAGE_ENV, DEBUG_IMAGE)
            narrate(f"scanning {environment.api_url} with KUBECONFIG={environment.kubeconfig}")
            options = dataclasses.replace(Options(), kubeconfig=str(environment.kubeconfig))
            with PrefectApi(Connection(environment.api_url)) as api:
                report = scan(api, options, lambda what, done, total: None)
            render(report, Format(fmt), sys.stdout, color=color)
            _compare(report, {r.run_id: r.expected_cause.value for r in environment.runs}, err)
            if keep:
                err.print(
                    f"The server stays up at {environment.api_url}; KUBECONFIG={environment.kubeconfig}; "
                    "press Enter to clean up."
                )
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


__all__ = ["run_kube_demo"]
