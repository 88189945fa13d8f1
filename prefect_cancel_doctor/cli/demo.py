"""`demo`: real runs stuck in Cancelling on a local server, diagnosed."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from prefect_cancel_doctor.cli.options import Color, FormatOpt, examples
from prefect_cancel_doctor.cli.output import fail, usage
from prefect_cancel_doctor.render import Format

DEMO_EPILOG = examples(
    "prefect-cancel-doctor demo",
    "prefect-cancel-doctor demo --keep        # keep the server, its UI and the stuck runs up until Enter",
    "prefect-cancel-doctor demo --docker      # the runs in containers of a prefect-docker worker",
    "prefect-cancel-doctor demo --kubernetes  # the runs in pods behind a fixture Kubernetes API",
    "prefect-cancel-doctor demo --ecs         # the runs in ECS tasks: moto's ECS API, containers here",
)


def demo(
    fmt: FormatOpt = Format.TERMINAL,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep",
            help="Leave the server and stuck runs up until Enter is pressed; the server serves Prefect's UI"
            " (the report's UI links open) and the demo prints the export PREFECT_API_URL=… line to run"
            " scan, resolve or watch against it from another terminal.",
        ),
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
    ecs: Annotated[
        bool,
        typer.Option(
            "--ecs",
            help="Stick the runs in ECS tasks: moto's ECS API in server mode, the tasks on this host as"
            " Docker containers with the ECS agent's labels (needs Docker and the demo-ecs extra).",
        ),
    ] = False,
    color: Color = None,
) -> None:
    """Start a local Prefect server, get real flows stuck in Cancelling, and diagnose them."""
    if sum((docker, kubernetes, ecs)) > 1:
        fail(usage("--docker, --kubernetes and --ecs stage the runs in different places: choose one"))
    # The demo's staged server, worker and flows are no one's use of Prefect: Prefect's first-run
    # telemetry notice (prefect/_internal/analytics, printed on `import prefect` in a terminal)
    # would land in the middle of the demo, and its first-import event would count each demo's
    # throwaway PREFECT_HOME as a new user. DO_NOT_TRACK is the standard switch Prefect reads.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from prefect_cancel_doctor.demo.run import run_demo

    raise typer.Exit(
        run_demo(fmt.value, keep=keep, docker=docker, kubernetes=kubernetes, ecs=ecs, color=color)
    )
