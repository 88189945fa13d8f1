"""`scan`, `diagnose` and `inspect`: a report of stuck runs, of one run, of a process, container or pod."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from prefect_cancel_doctor.cli.act import resolve_found
from prefect_cancel_doctor.cli.connect import open_api, with_ui
from prefect_cancel_doctor.cli.options import (
    ApiKey,
    ApiUrl,
    Color,
    Deadline,
    DebugImage,
    DryRun,
    Fleet,
    FormatOpt,
    Grace,
    Interval,
    Kubeconfig,
    KubeContext,
    Locals,
    Native,
    OutputFile,
    Parallel,
    Profile,
    Publish,
    Samples,
    SamplesDetail,
    Since,
    Timeout,
    Yes,
    examples,
    kube,
    scan_options,
)
from prefect_cancel_doctor.cli.output import emit, fail, published, run_report, usage
from prefect_cancel_doctor.render import Format

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi
    from prefect_cancel_doctor.model import Diagnosis, Report
    from prefect_cancel_doctor.scan.engine import ProgressFn

SCAN_EPILOG = examples(
    "prefect-cancel-doctor scan",
    "prefect-cancel-doctor scan --since 24h --no-native",
    "prefect-cancel-doctor scan -o markdown --output-file stuck.md",
    "prefect-cancel-doctor scan --publish    # verdicts as Prefect events, an artifact on each run",
    "prefect-cancel-doctor scan -o json | jq '.runs[] | {name: .flow_run.name, ui: .ui_url}'",
)


def scan(
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
    profile: Profile = None,
    fmt: FormatOpt = Format.TERMINAL,
    output_file: OutputFile = None,
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
    options = kube(
        scan_options(samples, interval, native, locals_, parallel, timeout, since),
        kubeconfig,
        context,
        debug_image,
    )
    if resolve_orphans:
        from prefect_cancel_doctor.act.resolving import split_orphans
        from prefect_cancel_doctor.scan.engine import scan as run_scan

        still_cancelling: list[Diagnosis] = []

        def orphans(api: PrefectApi) -> list[Diagnosis]:
            report = run_scan(api, with_ui(options, api, profile), lambda *_: None)
            emit(report, fmt, color, output_file, samples_detail)
            final, cancelling = split_orphans(report)
            still_cancelling.extend(cancelling)
            return final

        # Stuck runs still in Cancelling keep the scan's exit code 1: resolving orphans hides none.
        # The plan goes to stderr: stdout holds the scan's report.
        resolve_found(
            api_url,
            api_key,
            profile,
            orphans,
            yes,
            dry_run,
            grace,
            stuck=lambda: bool(still_cancelling),
            plan_on_stdout=False,
        )

    def work(progress: ProgressFn) -> Report:
        from prefect_cancel_doctor.scan.engine import scan as run_scan

        with open_api(api_url, api_key, profile) as api:
            report = run_scan(api, with_ui(options, api, profile), progress)
            report = _published(api, report) if publish else report
            return _with_fleet(api, report) if fleet else report

    run_report(fmt, color, work, output_file, samples_detail, deadline)


DIAGNOSE_EPILOG = examples(
    "prefect-cancel-doctor diagnose crafty-lemur",
    "prefect-cancel-doctor diagnose 06e664e5-5fa7-4eba-bb99-2dfc47082c1c --locals",
    "prefect-cancel-doctor diagnose crafty-lemur -o markdown --output-file ticket.md",
    "prefect-cancel-doctor diagnose crafty-lemur -o json --samples-detail > run.json",
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
    output_file: OutputFile = None,
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
        fail(usage("give a flow run id or name"))
    options = kube(
        scan_options(samples, interval, native, locals_, parallel, timeout), kubeconfig, context, debug_image
    )

    def work(progress: ProgressFn) -> Report:
        from prefect_cancel_doctor.scan.engine import diagnose_run

        with open_api(api_url, api_key, profile) as api:
            return diagnose_run(api, run, with_ui(options, api, profile), progress)

    run_report(fmt, color, work, output_file, samples_detail, deadline)


INSPECT_EPILOG = examples(
    "prefect-cancel-doctor inspect --pid 12345",
    "prefect-cancel-doctor inspect --container etl-7",
    "prefect-cancel-doctor inspect --pid 12345 -o markdown --output-file ticket.md",
    "prefect-cancel-doctor inspect --pod prod/etl-x7k2p-abcde   # a Kubernetes pod, by kubeconfig",
    "prefect-cancel-doctor inspect --pid 1        # in a debug container sharing a pod's PIDs",
    "prefect-cancel-doctor inspect --ecs-task prod/0a1b2c3d4e5f   # an ECS task, by boto3's credentials",
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
    ecs_task: Annotated[
        Optional[str],
        typer.Option(
            "--ecs-task",
            help="Diagnose this ECS task (CLUSTER/TASK, TASK an id or ARN), without the Prefect API; AWS "
            "credentials, region and endpoint as boto3 reads them (AWS_PROFILE, AWS_REGION, "
            "AWS_ENDPOINT_URL_ECS).",
            show_default=False,
            metavar="CLUSTER/TASK",
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
    output_file: OutputFile = None,
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
    """Diagnose a process, container, pod or ECS task you already know (the flow process, a survivor).

    A --pid that is no Prefect flow (no flow engine, Runner or PREFECT__FLOW_RUN_ID
    in it or its children, no flow engine in its stacks) is refused with exit 2."""
    if [pid is not None, container is not None, pod is not None, ecs_task is not None].count(True) != 1:
        fail(
            usage(
                "give exactly one of --pid PID, --container ID|NAME, --pod NAMESPACE/NAME or "
                "--ecs-task CLUSTER/TASK"
            )
        )
    options = kube(
        scan_options(samples, interval, native, locals_, 4, timeout), kubeconfig, context, debug_image
    )

    def work(progress: ProgressFn) -> Report:
        from prefect_cancel_doctor.scan.engine import (
            inspect_container,
            inspect_ecs_task,
            inspect_pid,
            inspect_pod,
        )

        if pod is not None:
            return inspect_pod(pod, options, progress)
        if ecs_task is not None:
            return inspect_ecs_task(ecs_task, options, progress)
        if container is not None:
            return inspect_container(container, options, progress)
        assert pid is not None
        return inspect_pid(pid, options, progress, any_process=any_process)

    run_report(fmt, color, work, output_file, samples_detail, deadline)


def _published(api: PrefectApi, report: Report) -> Report:
    """`scan --publish`: publish the verdicts this host answers for (`fleet.publish`). What could not be
    published joins the report's errors and stderr; the verdicts are shown and the exit code kept."""
    from prefect_cancel_doctor.fleet.publish import host_name, publish, seen_here

    return published(report, publish(api, report, seen=seen_here(host_name())))


def _with_fleet(api: PrefectApi, report: Report) -> Report:
    """The fleet's verdicts for the runs not found here (`fleet.protocol`); the runs no agent answers for, and
    why the fleet could not be read, as notes on stderr."""
    from prefect_cancel_doctor.fleet.protocol import fleet_for_report
    from prefect_cancel_doctor.fleet.publish import host_name

    report, uncovered, problems = fleet_for_report(api, report, host_name())
    for line in (*(u.text for u in uncovered), *problems):
        typer.echo(f"note: {line}", err=True)
    return report
