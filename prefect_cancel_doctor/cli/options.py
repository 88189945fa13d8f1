"""The flags several commands share, as typer reads them, and what turns them into `Options`.

typer reads each command's annotations at run time: a command module imports the aliases it uses.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from prefect_cancel_doctor.render import Format

if TYPE_CHECKING:
    from prefect_cancel_doctor.scan.engine import Options


def examples(*lines: str) -> str:
    """A command's epilog: its examples, one a line as written (click's "\\b" keeps them unwrapped)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


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
        "--output",
        "-o",
        "--format",
        "-f",
        envvar="PCD_FORMAT",
        help="The report's format, as `-o json` in Prefect's and kubectl's CLIs: terminal (rich), "
        "markdown (one section per run, for a ticket) or json (stdout then holds only JSON); "
        "-f/--format is the same option.",
    ),
]


def output_file_option(*envvars: str) -> Any:
    """`--output-file FILE`, read from `envvars` too (`scan`'s and `report`'s have their own)."""
    return typer.Option(
        "--output-file",
        envvar=list(envvars),
        help="Write the report to this file (atomically, once it is complete) instead of stdout.",
        show_default=False,
        metavar="FILE",
    )


#: `PCD_OUTPUT` is the variable's name from when `-o/--output` named the file: still read.
OutputFile = Annotated[Optional[str], output_file_option("PCD_OUTPUT_FILE", "PCD_OUTPUT")]
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


def kube(
    options: Options, kubeconfig: str | None, context: str | None, debug_image: str | None = None
) -> Options:
    """`options` with the Kubernetes connection flags and `--debug-image` (PCD_KUBE_DEBUG_IMAGE)."""
    import dataclasses

    image = debug_image or options.kube_debug_image
    return dataclasses.replace(options, kubeconfig=kubeconfig, kube_context=context, kube_debug_image=image)


def parse_duration(value: str, param_hint: str = "--since") -> timedelta:
    """A duration flag ('90s', '30m', '1h', '2d') → timedelta; a usage error otherwise."""
    from prefect_cancel_doctor.core.durations import parse_duration as parse

    try:
        return parse(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=param_hint) from exc


def scan_options(
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
