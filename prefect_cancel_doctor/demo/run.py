"""`prefect-cancel-doctor demo`: stage real stuck runs, scan them, show the report, clean up.

Four stagings, one scan: local processes of real process workers (the default);
containers of a real prefect-docker worker (`--docker`); pods (`--kubernetes`):
Docker containers served by `demo.kube_apiserver` (no cluster can be started here)
with everything else real — a local Prefect server, `prefect flow-run execute` or
the engine in each pod, the cancel, py-spy and /proc. The Kubernetes scan runs on
"the node" (this host), so the attach mode chosen is `node`; ``PCD_KUBE_ATTACH=
ephemeral`` samples every pod from an ephemeral container instead. Or ECS tasks
(`--ecs`, `demo.ecs_harness`): moto's ECS API in server mode in this process, and
the tasks that run on "this EC2 host" as Docker containers with the ECS agent's
labels; the scan reads moto through boto3's settings, set for it alone.

With `--keep` the server also serves Prefect's UI (its start-up costs the same:
Prefect unpacks the UI once per version, then mounts it in milliseconds), so the
report's UI links open, and the demo prints the lines that point the doctor in
another terminal at this server until Enter is pressed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.text import Text

from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.settings import Connection
from prefect_cancel_doctor.demo.harness import HarnessError, LocalPrefect
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
    ecs: bool = False,
    color: bool | None = None,
) -> int:
    """Run the demo; the report goes to stdout, the narration to stderr."""
    err = Console(stderr=True, highlight=False, no_color=None if color is None else not color)

    def narrate(line: str) -> None:
        err.print(Text(f"demo: {line}", style="dim"))

    try:
        with _stage(docker, kubernetes, ecs, narrate, ui=keep) as environment:
            options, where = Options(), environment.api_url
            kubeconfig = getattr(environment, "kubeconfig", None)
            if kubeconfig is not None:
                from prefect_cancel_doctor.demo.kube_harness import DEBUG_IMAGE

                # The demo's own image, for PCD_KUBE_ATTACH=ephemeral, unless the user chose one.
                image = options.kube_debug_image or DEBUG_IMAGE
                options = dataclasses.replace(options, kubeconfig=str(kubeconfig), kube_debug_image=image)
                where += f" with KUBECONFIG={kubeconfig}"
            narrate(f"scanning {where} (prefect-cancel-doctor scan)")
            with _doctor_environ(environment), PrefectApi(Connection(environment.api_url)) as api:
                report = scan(api, options, lambda what, done, total: None)
            render(report, Format(fmt), sys.stdout, color=color)
            _compare(report, {r.run_id: r.expected_cause.value for r in environment.runs}, err)
            if keep:
                for line in keep_lines(environment):
                    err.print(Text(line), soft_wrap=True)  # never wrapped: lines to paste
                err.print("Press Enter to clean up.")
                input()
            else:
                narrate("the server stops with the demo, and the UI links with it: --keep keeps both up")
    except KeyboardInterrupt:
        err.print("demo: interrupted; everything it started has been stopped")
        return EXIT_INTERRUPTED
    except DoctorError as exc:
        err.print(Text(f"error: {exc}", style="red"), soft_wrap=True)  # one line, as every error
        return exc.exit_code
    except HarnessError as exc:
        err.print(Text(f"error: the demo could not stage its runs: {exc}", style="red"), soft_wrap=True)
        return EXIT_USAGE
    return EXIT_OK


class Kept(Protocol):
    """What `keep_lines` reads of a staged environment (every staging has it)."""

    @property
    def harness(self) -> LocalPrefect: ...

    @property
    def api_url(self) -> str: ...


def keep_lines(environment: Kept) -> list[str]:
    """What `--keep` prints while the runs stay up: the UI's address, and the lines to paste in
    another terminal to run the doctor (`scan`, `resolve`, `watch`) against this server."""
    harness = environment.harness
    exports = {"PREFECT_API_URL": environment.api_url}
    kubeconfig: Path | None = getattr(environment, "kubeconfig", None)
    if kubeconfig is not None:
        from prefect_cancel_doctor.demo.kube_harness import DEBUG_IMAGE

        exports |= {"KUBECONFIG": str(kubeconfig), "PCD_KUBE_DEBUG_IMAGE": DEBUG_IMAGE}
    doctor_env: Callable[[], dict[str, str]] | None = getattr(environment, "doctor_env", None)
    if doctor_env is not None:  # ECS: boto3's settings for moto
        exports |= doctor_env()
    lines = ["The server and the stuck runs stay up until you press Enter."]
    if harness.ui_url is not None and harness.ui_served():
        lines.append(f"  Prefect UI: {harness.ui_url}  (the report's UI links open there)")
    elif harness.ui_url is not None:
        lines.append(f"  Prefect UI: not served; the server's log says why: {harness.server_log_path}")
    lines.append("  In another terminal, point the doctor at this server:")
    lines += [f"    export {name}={shlex.quote(value)}" for name, value in exports.items()]
    lines.append("    prefect-cancel-doctor scan    # then: resolve <run name>, watch")
    return lines


def _stage(
    docker: bool, kubernetes: bool, ecs: bool, narrate: Callable[[str], None], *, ui: bool
) -> contextlib.AbstractContextManager[Any]:
    """The staged environment: each offers .harness, .api_url and .runs with .run_id and
    .expected_cause (the Kubernetes one .kubeconfig too, the ECS one .doctor_env()); its server
    serves Prefect's UI if `ui`. Imported only when chosen: each is heavy."""
    if ecs:
        from prefect_cancel_doctor.demo.ecs_harness import ecs_demo_environment

        return ecs_demo_environment(log=narrate, ui=ui)
    if kubernetes:
        from prefect_cancel_doctor.demo.kube_harness import kube_demo_environment

        return kube_demo_environment(log=narrate, ui=ui)
    if docker:
        from prefect_cancel_doctor.demo.docker_harness import docker_demo_environment

        return docker_demo_environment(log=narrate, ui=ui)
    from prefect_cancel_doctor.demo.environment import run_demo_environment

    return run_demo_environment(console_log=narrate, ui=ui)


def _doctor_environ(environment: object) -> contextlib.AbstractContextManager[None]:
    """This process's environment as the doctor should see it for its scan (the ECS staging's AWS
    settings, which point boto3 at moto: and no other AWS setting); unchanged for the others."""
    doctor_env: Callable[[], dict[str, str]] | None = getattr(environment, "doctor_env", None)
    if doctor_env is None:
        return contextlib.nullcontext()
    from prefect_cancel_doctor.demo.ecs_harness import doctor_environ

    return doctor_environ(doctor_env())


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


__all__ = ["Kept", "keep_lines", "run_demo"]
