"""Real flow runs stuck in Cancelling inside pods of the fixture Kubernetes API (`demo.kube_apiserver`).

No cluster can run here, so the pods are Docker containers behind a Kubernetes
API server that serves them with Kubernetes' shapes (see `kube_apiserver`). The
harness plays the prefect-kubernetes worker's part, as its 0.6+ releases do it:
it proposes Pending, creates the run's Job (`generateName` from the run's name,
``backoffLimit: 0``, container ``prefect-job`` whose ``args`` are the job
command, default ``prefect flow-run execute``, the ``prefect.io/*`` labels,
``PREFECT__FLOW_RUN_ID`` and, as 0.8 adds with ``backoffLimit: 0``,
``PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR=reschedule`` in its environment) and records
``infrastructure_pid = "<namespace>:<job name>"``. From there everything is real:
`prefect flow-run execute` (the Runner) or the engine runs in the pod's
container against a real local Prefect server, reaches its blocking line, and is
cancelled through the API; then each recipe gets it stuck.

Images: the Docker harness's tiny imported image (host /usr, this interpreter
and its virtualenv mounted read-only) is the pods' image ``pcd/flow:3.9``;
`build_debug_image` adds a debug image ``pcd/debug:1`` holding the py-spy
binary at ``/pcd/bin/py-spy``, for ephemeral containers.

`kube_demo_environment()` leaves: the server (HTTPS, a CA, tokens for an
``admin`` and a ``restricted`` user who may not patch pods/ephemeralcontainers),
two kubeconfigs, a namespace ``pcd-flows`` and a namespace ``pcd-baseline`` whose
Pod Security level is ``baseline``, and one stuck run per scenario of
`KUBE_SCENARIOS`. Leaving it removes every container, the images, the server.
"""

from __future__ import annotations

import contextlib
import enum
import io
import os
import secrets
import shutil
import tarfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect_cancel_doctor.clients.docker_api import DockerClient, DockerError
from prefect_cancel_doctor.demo.catalog import marker_line
from prefect_cancel_doctor.demo.docker_harness import (
    ABSORBED_LOG_WORDS,
    DOCKER_SCENARIO_DIR,
    ENGINE_COMMAND,
    OWNER_LABEL,
    RUNNER_KILL_GRACE_SECONDS,
    build_image,
    host_mounts,
    image_path_env,
    remove_leftovers,
    rootfs_tarball,
)
from prefect_cancel_doctor.demo.harness import CANCELLING_TIMEOUT_MESSAGE, LocalPrefect, StageClock
from prefect_cancel_doctor.demo.kube_apiserver import FakeApiServer, Policy, fake_cluster
from prefect_cancel_doctor.model import Absorber, CallKind, Cause, Delivered
from prefect_cancel_doctor.sample.pyspy import find_py_spy

#: Directory of the flow programs only the Kubernetes harness stages.
KUBE_SCENARIO_DIR = Path(__file__).parent / "kube_scenarios"
#: Image names the fixture cluster knows.
POD_IMAGE = "pcd/flow:3.9"
DEBUG_IMAGE = "pcd/debug:1"
#: Where the debug image holds py-spy.
DEBUG_PYSPY = "/pcd/bin/py-spy"
DEBUG_REPOSITORY = "pcd-kube-debug"
#: Namespaces: the flows', and one whose Pod Security level is baseline.
NAMESPACE = "pcd-flows"
BASELINE_NAMESPACE = "pcd-baseline"
#: The work pool the runs belong to (type "kubernetes"; no worker process polls it).
KUBE_POOL = "pcd-kubernetes"
KUBE_WORKER = "pcd-kubernetes-worker"
#: The finalizer the Terminating scenario's pod carries.
HOLD_FINALIZER = "pcd.example.com/hold"
#: The users of the fixture: an admin and one who may not create ephemeral containers.
ADMIN = "pcd-admin"
RESTRICTED = "pcd-restricted"
SHELL_ARGS = ["sh", "-c", "python -m prefect.engine; echo done"]


class KubeRecipe(str, enum.Enum):
    """How the harness gets a run in a pod stuck."""

    #: Default command: after the Runner's SIGTERM, freeze the Runner (PID 1) before its SIGKILL.
    RUNNER_FROZEN_AFTER_SIGTERM = "runner_frozen_after_sigterm"
    #: No Runner: nothing acts on the cancel.
    CANCEL_UNOBSERVED = "cancel_unobserved"
    #: Cancel, then SIGTERM PID 1 (what the kubelet sends first): a shell drops it; a flow's own
    #: handler or `except` absorbs it (the harness waits for the scenario's `.sigterm` witness).
    STOP_SIGNAL_SENT = "stop_signal_sent"
    #: Cancel, then delete the Job in the foreground (as the worker's teardown does) with a grace
    #: longer than any scan: the pod is Terminating and the kubelet has SIGTERMed its PID 1.
    TERMINATING_IN_GRACE = "terminating_in_grace"
    #: A shell PID 1 and a pod finalizer: cancel, delete the Job in the foreground (as the worker's
    #: teardown does): the pod's SIGTERM is dropped, SIGKILL after its 2 s grace; the pod stays
    #: Terminating, held by its finalizer, and the Job with it.
    TERMINATING_WITH_FINALIZER = "terminating_with_finalizer"
    #: No Runner: cancel, then the flow outgrows the container's memory limit (OOMKilled).
    OOM_KILLED = "oom_killed"
    #: No Runner: cancel, then delete the Job with the API's default propagation for Jobs (Orphan).
    JOB_DELETED_POD_ALIVE = "job_deleted_pod_alive"
    #: No Runner: cancel, then force CANCELLED through the API (the server's timeout): the Job runs on.
    FORCED_CANCELLED = "forced_cancelled"
    #: No Runner: cancel, then the kubelet evicts the pod (node pressure): killed, phase Failed, Evicted.
    EVICTED = "evicted"


@dataclass(frozen=True)
class KubeScenario:
    """One way for a run in a pod to get stuck."""

    name: str
    #: The flow program (path) and its `@flow` function.
    path: Path
    flow_function: str
    expected_cause: Cause
    expected_kind: CallKind | None
    recipe: KubeRecipe
    description: str
    #: The container's args (None: prefect-kubernetes's default, `prefect flow-run execute`).
    args: tuple[str, ...] | None = None
    namespace: str = NAMESPACE
    expected_state: str = "CANCELLING"
    #: Whether the flow's container still runs once staged.
    running: bool = True
    #: Extra pod spec / container fields.
    memory_limit: str | None = None
    finalizers: tuple[str, ...] = ()
    grace_seconds: int = 30
    #: Whether the flow writes `<ready_path>.sigterm` once it has absorbed the SIGTERM.
    witnesses_sigterm: bool = False
    #: Whether a SIGTERM came (`Verdict.delivery.sigterm`) and where it went (None: not asserted).
    expected_delivery: Delivered | None = None
    expected_absorbed: Absorber | None = None

    @property
    def file(self) -> str:
        """The flow program's file name."""
        return self.path.name

    @property
    def entrypoint(self) -> str:
        """Prefect entrypoint, relative to the deployed directory."""
        return f"{self.file}:{self.flow_function}"


_CATALOG = (
    KubeScenario(
        name="kube_signal_pending",
        path=DOCKER_SCENARIO_DIR / "stuck_docker_busy_db.py",
        flow_function="busy_db_flow",
        expected_cause=Cause.SIGNAL_PENDING,
        expected_kind=CallKind.DATABASE,
        recipe=KubeRecipe.RUNNER_FROZEN_AFTER_SIGTERM,
        description="default command (the Runner is PID 1 of the pod's container); a SQLite busy wait "
        "keeps the Runner's SIGTERM pending; the Runner is frozen before its SIGKILL",
    ),
    KubeScenario(
        name="kube_shell_pid1",
        path=DOCKER_SCENARIO_DIR / "stuck_docker_shell.py",
        flow_function="shell_flow",
        expected_cause=Cause.PID1_NO_FORWARD,
        expected_kind=CallKind.SLEEP,
        recipe=KubeRecipe.STOP_SIGNAL_SENT,
        description="args `sh -c '...; echo done'`: a shell is PID 1 and drops the kubelet's SIGTERM",
        args=tuple(SHELL_ARGS),
    ),
    KubeScenario(
        name="kube_no_runner",
        path=DOCKER_SCENARIO_DIR / "stuck_docker_no_runner.py",
        flow_function="no_runner_flow",
        expected_cause=Cause.CANCEL_NOT_OBSERVED,
        expected_kind=CallKind.SLEEP,
        recipe=KubeRecipe.CANCEL_UNOBSERVED,
        description="args `python -m prefect.engine`: no Runner in the pod sees the cancel",
        args=tuple(ENGINE_COMMAND.split()),
    ),
    KubeScenario(
        name="kube_terminating",
        path=DOCKER_SCENARIO_DIR / "stuck_docker_shell.py",
        flow_function="shell_flow",
        expected_cause=Cause.INFRASTRUCTURE_GONE,
        expected_kind=None,
        recipe=KubeRecipe.TERMINATING_WITH_FINALIZER,
        description="a shell PID 1 and a finalizer: its Job was deleted in the foreground (the pod's grace: "
        "2 s); its container was SIGKILLed and the pod stays Terminating, held by its finalizer, the Job too",
        args=tuple(SHELL_ARGS),
        running=False,
        finalizers=(HOLD_FINALIZER,),
        grace_seconds=2,
    ),
    KubeScenario(
        name="kube_handler_terminating",
        path=DOCKER_SCENARIO_DIR / "stuck_docker_handler.py",
        flow_function="handler_flow",
        expected_cause=Cause.SIGNAL_IGNORED,
        expected_kind=CallKind.SLEEP,
        recipe=KubeRecipe.TERMINATING_IN_GRACE,
        description="the engine is PID 1 and the flow's own SIGTERM handler returns; its Job was deleted in "
        "the foreground: the pod is Terminating (grace 600 s), the kubelet's SIGTERM absorbed",
        args=tuple(ENGINE_COMMAND.split()),
        grace_seconds=600,
        witnesses_sigterm=True,
        expected_delivery=Delivered.YES,
        expected_absorbed=Absorber.HANDLER_RETURNS,
    ),
    KubeScenario(
        name="kube_except_loop",
        path=DOCKER_SCENARIO_DIR / "stuck_docker_except.py",
        flow_function="except_flow",
        expected_cause=Cause.SIGNAL_IGNORED,
        expected_kind=CallKind.SLEEP,
        recipe=KubeRecipe.STOP_SIGNAL_SENT,
        description="the engine is PID 1; `except BaseException` in a loop catches the TerminationSignal "
        "of the SIGTERM sent to PID 1 and goes on",
        args=tuple(ENGINE_COMMAND.split()),
        witnesses_sigterm=True,
        expected_delivery=Delivered.YES,
        expected_absorbed=Absorber.EXCEPTION_SWALLOWED,
    ),
    KubeScenario(
        name="kube_oom",
        path=KUBE_SCENARIO_DIR / "stuck_kube_oom.py",
        flow_function="oom_flow",
        expected_cause=Cause.INFRASTRUCTURE_GONE,
        expected_kind=None,
        recipe=KubeRecipe.OOM_KILLED,
        description="no Runner; cancelled, then the flow outgrew its 400Mi limit: OOMKilled",
        args=tuple(ENGINE_COMMAND.split()),
        running=False,
        memory_limit="400Mi",
    ),
    KubeScenario(
        name="kube_job_deleted",
        path=DOCKER_SCENARIO_DIR / "stuck_docker_no_runner.py",
        flow_function="no_runner_flow",
        expected_cause=Cause.CANCEL_NOT_OBSERVED,
        expected_kind=CallKind.SLEEP,
        recipe=KubeRecipe.JOB_DELETED_POD_ALIVE,
        description="no Runner; cancelled, then its Job deleted with the API's default propagation for "
        "Jobs (Orphan): the pod runs on without a Job",
        args=tuple(ENGINE_COMMAND.split()),
    ),
    KubeScenario(
        name="kube_orphan",
        path=DOCKER_SCENARIO_DIR / "stuck_docker_orphan.py",
        flow_function="orphan_flow",
        expected_cause=Cause.ORPHANED_INFRASTRUCTURE,
        expected_kind=CallKind.SLEEP,
        recipe=KubeRecipe.FORCED_CANCELLED,
        description="no Runner; the run was forced to Cancelled (the server's timeout) while its Job runs on",
        args=tuple(ENGINE_COMMAND.split()),
        expected_state="CANCELLED",
    ),
    KubeScenario(
        name="kube_evicted",
        path=DOCKER_SCENARIO_DIR / "stuck_docker_no_runner.py",
        flow_function="no_runner_flow",
        expected_cause=Cause.INFRASTRUCTURE_GONE,
        expected_kind=None,
        recipe=KubeRecipe.EVICTED,
        description="no Runner; cancelled, then the pod was evicted by the kubelet (node pressure)",
        args=tuple(ENGINE_COMMAND.split()),
        running=False,
    ),
    KubeScenario(
        name="kube_baseline",
        path=DOCKER_SCENARIO_DIR / "stuck_docker_no_runner.py",
        flow_function="no_runner_flow",
        expected_cause=Cause.CANCEL_NOT_OBSERVED,
        expected_kind=CallKind.SLEEP,
        recipe=KubeRecipe.CANCEL_UNOBSERVED,
        description="no Runner, in a namespace whose Pod Security level (baseline) forbids SYS_PTRACE: "
        "no ephemeral container may attach",
        args=tuple(ENGINE_COMMAND.split()),
        namespace=BASELINE_NAMESPACE,
    ),
)

#: Every Kubernetes scenario by name.
KUBE_SCENARIOS: dict[str, KubeScenario] = {scenario.name: scenario for scenario in _CATALOG}


def select_kube_scenarios(names: Iterable[str] | None) -> list[KubeScenario]:
    """The scenarios named (all for None), in catalog order; unknown names raise KeyError."""
    if names is None:
        return list(_CATALOG)
    wanted = set(names)
    unknown = sorted(wanted - set(KUBE_SCENARIOS))
    if unknown:
        raise KeyError(
            f"unknown Kubernetes scenario(s) {', '.join(unknown)}; known: {', '.join(KUBE_SCENARIOS)}"
        )
    return [s for s in _CATALOG if s.name in wanted]


# -- images -------------------------------------------------------------------------------


def build_debug_image(client: DockerClient, owner: str) -> str:
    """`docker import` the tiny root filesystem plus py-spy at DEBUG_PYSPY; returns its reference."""
    base = rootfs_tarball()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(base)) as source, tarfile.open(fileobj=buffer, mode="w") as target:
        for member in source.getmembers():
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
        for directory in ("pcd", "pcd/bin"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            target.addfile(info)
        binary = os.path.realpath(find_py_spy())
        info = target.gettarinfo(binary, arcname=DEBUG_PYSPY.lstrip("/"))
        info.mode, info.uid, info.gid, info.uname, info.gname = 0o755, 0, 0, "root", "root"
        with open(binary, "rb") as handle:
            target.addfile(info, handle)
    client.import_image(
        buffer.getvalue(),
        DEBUG_REPOSITORY,
        owner,
        changes=[f"ENV PATH=/pcd/bin:{image_path_env()}", f"LABEL {OWNER_LABEL}={owner}"],
    )
    return f"{DEBUG_REPOSITORY}:{owner}"


def remove_images(client: DockerClient, owner: str) -> None:
    """Delete this session's pod and debug images."""
    from prefect_cancel_doctor.demo.docker_harness import IMAGE_REPOSITORY

    for reference in (f"{IMAGE_REPOSITORY}:{owner}", f"{DEBUG_REPOSITORY}:{owner}"):
        with contextlib.suppress(DockerError):
            client.remove_image(reference)


# -- the environment ------------------------------------------------------------------------


@dataclass(frozen=True)
class StuckPodRun:
    """One staged run in a pod, with what the doctor should say about it."""

    scenario: str
    run_id: str
    run_name: str
    namespace: str
    job: str
    pod: str
    #: `infrastructure_pid` exactly as recorded ("<namespace>:<job>").
    infrastructure_pid: str
    #: Docker id of the pod's flow container.
    container_id: str
    expected_cause: Cause
    expected_kind: CallKind | None
    expected_state: str
    running: bool
    #: (file, line) the doctor should name as the blocking call, or None.
    expected_location: tuple[str, int] | None

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for printing."""
        return {
            "scenario": self.scenario,
            "run_id": self.run_id,
            "pod": f"{self.namespace}/{self.pod}",
            "infrastructure_pid": self.infrastructure_pid,
            "expected_cause": self.expected_cause.value,
            "expected_location": list(self.expected_location) if self.expected_location else None,
        }


@dataclass
class KubeDemoEnvironment:
    """The staged server, fixture cluster and runs; `env()` points the doctor at them."""

    harness: LocalPrefect
    api: FakeApiServer
    docker: DockerClient
    kubeconfig: Path
    restricted_kubeconfig: Path
    runs: list[StuckPodRun]
    owner: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        """The Prefect API URL."""
        return self.harness.api_url

    def env(self, *, restricted: bool = False, attach: str | None = None) -> dict[str, str]:
        """Environment variables for the doctor: the Prefect API, the kubeconfig, the debug image."""
        values = {
            "PREFECT_API_URL": self.api_url,
            "KUBECONFIG": str(self.restricted_kubeconfig if restricted else self.kubeconfig),
            "PCD_KUBE_DEBUG_IMAGE": DEBUG_IMAGE,
        }
        if attach:
            values["PCD_KUBE_ATTACH"] = attach
        return values

    def run(self, scenario: str) -> StuckPodRun:
        """The staged run of a scenario."""
        return next(r for r in self.runs if r.scenario == scenario)


@contextlib.contextmanager
def kube_demo_environment(
    scenarios: Iterable[str] | None = None,
    *,
    harness: LocalPrefect | None = None,
    log: Callable[[str], None] = print,
    ready_timeout: float = 240.0,
    client: DockerClient | None = None,
    ui: bool = False,
    copies: int = 1,
) -> Iterator[KubeDemoEnvironment]:
    """Real runs stuck in Cancelling in pods of the fixture API; everything is removed on exit.

    `copies` stages each scenario that many times (the benchmark's 20 pods).
    `ui`: the server started here serves Prefect's UI too (`LocalPrefect(ui=True)`)."""
    chosen = select_kube_scenarios(scenarios)
    started = time.monotonic()
    docker = client or DockerClient(timeout=30.0)
    docker.ping()
    owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        if client is None:
            stack.callback(docker.close)
        remove_leftovers(docker, log)
        stack.callback(remove_images, docker, owner)
        if harness is None:
            harness = stack.enter_context(LocalPrefect(log=log, ui=ui))
        environment = _stage(harness, docker, chosen, owner, log, ready_timeout, stack, copies)
        log(f"{len(environment.runs)} stuck pod run(s) ready in {time.monotonic() - started:.0f} s")
        yield environment
        log("cleaning up: the fixture API server, the pods' containers, the images")


def _stage(
    harness: LocalPrefect,
    docker: DockerClient,
    scenarios: list[KubeScenario],
    owner: str,
    log: Callable[[str], None],
    ready_timeout: float,
    stack: contextlib.ExitStack,
    copies: int = 1,
) -> KubeDemoEnvironment:
    clock = StageClock()
    flows_dir = harness.workdir / "kube-flows"
    ready_dir = harness.workdir / "kube-ready"
    flows_dir.mkdir(exist_ok=True)
    ready_dir.mkdir(exist_ok=True)
    ready_dir.chmod(0o777)
    for scenario in scenarios:
        shutil.copy2(scenario.path, flows_dir / scenario.file)
    mounts = [*host_mounts([flows_dir]), f"{ready_dir}:{ready_dir}"]
    pod_image = build_image(docker, owner, owner)
    debug_image = build_debug_image(docker, owner)
    clock.lap("images")

    tokens = {secrets.token_urlsafe(24): ADMIN, secrets.token_urlsafe(24): RESTRICTED}
    policy = Policy(
        users=tokens,
        deny={RESTRICTED: {("patch", "pods/ephemeralcontainers"), ("update", "pods/ephemeralcontainers")}},
    )
    api = stack.enter_context(
        fake_cluster(
            docker,
            images={POD_IMAGE: pod_image, DEBUG_IMAGE: debug_image},
            host_mounts=mounts,
            owner=owner,
            policy=policy,
            tls=True,
            extra_labels={OWNER_LABEL: owner},
        )
    )
    api.cluster.ensure_namespace(NAMESPACE)
    api.cluster.ensure_namespace(
        BASELINE_NAMESPACE,
        {
            "pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/enforce-version": "latest",
        },
    )
    by_user = {user: token for token, user in tokens.items()}
    kubeconfig = api.kubeconfig(harness.workdir / "kubeconfig", token=by_user[ADMIN], namespace=NAMESPACE)
    restricted = api.kubeconfig(
        harness.workdir / "kubeconfig-restricted", token=by_user[RESTRICTED], namespace=NAMESPACE
    )
    log(f"fixture Kubernetes API at {api.url} (kubeconfig {kubeconfig})")

    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with contextlib.suppress(ObjectAlreadyExists):
        harness.client.create_work_pool(
            WorkPoolCreate(name=KUBE_POOL, type="kubernetes", base_job_template={})
        )
    staged: list[_Staged] = []
    for scenario in scenarios:
        flow_id = harness.client.create_flow_from_name(_flow_name(scenario))
        deployment_id = harness.client.create_deployment(
            flow_id=flow_id,
            name=scenario.name,
            work_pool_name=KUBE_POOL,
            entrypoint=scenario.entrypoint,
            path=str(flows_dir),
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(flows_dir)}}],
        )
        for copy in range(copies):
            ready = ready_dir / (scenario.name + (f"-{copy}" if copies > 1 else ""))
            run_id = harness.create_run(str(deployment_id), {"ready_path": str(ready)})
            staged.append(_Staged(scenario, run_id, ready))
    clock.lap("deploy")

    for item in staged:
        _submit(harness, api, item)
    log(f"submitted {len(staged)} Job(s), as the prefect-kubernetes worker does")
    _wait_ready(harness, api, staged, ready_timeout)
    clock.lap("start_runs")
    log("every pod's flow is RUNNING at its blocking line")

    for item in staged:
        harness.cancel_run(item.run_id)
    for item in staged:
        _get_stuck(harness, api, docker, item, log)
    clock.lap("stuck")
    runs = [_stuck_run(harness, api, item, flows_dir) for item in staged]
    _verify(harness, api, runs)
    clock.lap("verify")
    return KubeDemoEnvironment(harness, api, docker, kubeconfig, restricted, runs, owner, clock.timings)


def _flow_name(scenario: KubeScenario) -> str:
    text = scenario.path.read_text()
    marker = '@flow(name="'
    start = text.index(marker) + len(marker)
    return text[start : text.index('"', start)]


@dataclass
class _Staged:
    scenario: KubeScenario
    run_id: str
    ready_path: Path
    job: str = ""
    pod: str = ""
    container_id: str = ""


def _submit(harness: LocalPrefect, api: FakeApiServer, item: _Staged) -> None:
    """What prefect-kubernetes's worker does for a run: Pending, the Job, infrastructure_pid."""
    scenario = item.scenario
    run = harness.read_run(item.run_id)
    harness.propose_pending(item.run_id)
    labels = {
        "prefect.io/flow-run-id": item.run_id,
        "prefect.io/flow-run-name": run.name,
        "prefect.io/deployment-name": scenario.name.replace("_", "-"),
        "prefect.io/worker-name": KUBE_WORKER,
        "prefect.io/work-pool-name": KUBE_POOL,
    }
    container: dict[str, Any] = {
        "name": "prefect-job",
        "image": POD_IMAGE,
        "imagePullPolicy": "Never",
        "args": list(scenario.args or ("prefect", "flow-run", "execute")),
        "env": [
            {"name": "PREFECT__FLOW_RUN_ID", "value": item.run_id},
            {"name": "PREFECT_API_URL", "value": harness.api_url},
            {"name": "PREFECT_HOME", "value": "/tmp/prefect-home"},
            {"name": "PREFECT_LOGGING_COLORS", "value": "false"},
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            # prefect-kubernetes 0.8 adds this when backoffLimit is 0 (`_configure_eviction_handling`).
            {"name": "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR", "value": "reschedule"},
        ],
    }
    if scenario.memory_limit:
        container["resources"] = {"limits": {"memory": scenario.memory_limit}}
    template_meta: dict[str, Any] = {"labels": dict(labels)}
    if scenario.finalizers:
        template_meta["finalizers"] = list(scenario.finalizers)
    job = api.cluster.create_job(
        scenario.namespace,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"generateName": f"{run.name}-", "labels": labels},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": template_meta,
                    "spec": {
                        "restartPolicy": "Never",
                        "terminationGracePeriodSeconds": scenario.grace_seconds,
                        "containers": [container],
                    },
                },
            },
        },
    )
    item.job = job["metadata"]["name"]
    pod = next(
        p for p in api.cluster.pods.values() if p.document["metadata"]["labels"].get("job-name") == item.job
    )
    item.pod = pod.document["metadata"]["name"]
    item.container_id = pod.docker_ids.get("prefect-job", "")
    harness.client.update_flow_run(
        uuid.UUID(item.run_id), infrastructure_pid=f"{scenario.namespace}:{item.job}"
    )


def _wait_ready(harness: LocalPrefect, api: FakeApiServer, items: list[_Staged], timeout: float) -> None:
    pending = {item.run_id: item for item in items}

    def check() -> bool:
        for run_id, run in harness.read_runs(list(pending)).items():
            item = pending[run_id]
            state = run.state.type.value if run.state is not None else "NONE"
            if run.state is not None and run.state.is_final():
                log_text = api.cluster.logs(item.scenario.namespace, item.pod, {}).decode(errors="replace")
                raise harness.error(f"run {run_id} ({item.scenario.name}) ended {state}:\n{log_text[-3000:]}")
            if state == "RUNNING" and item.ready_path.exists():
                del pending[run_id]
        return not pending

    harness.wait_until(
        check,
        timeout,
        lambda: "pods at their blocking line: " + ", ".join(i.scenario.name for i in pending.values()),
    )


def _get_stuck(
    harness: LocalPrefect, api: FakeApiServer, docker: DockerClient, item: _Staged, log: Callable[[str], None]
) -> None:
    scenario, recipe = item.scenario, item.scenario.recipe
    namespace = scenario.namespace
    if recipe is KubeRecipe.RUNNER_FROZEN_AFTER_SIGTERM:
        marker = Path(str(item.ready_path) + ".sigterm")
        harness.wait_until(
            marker.exists, RUNNER_KILL_GRACE_SECONDS - 5, f"{scenario.name}: the Runner's SIGTERM"
        )
        docker.kill(item.container_id, "SIGSTOP")
        log(f"{scenario.name}: the engine got the Runner's SIGTERM; the Runner (PID 1) is frozen")
    elif recipe is KubeRecipe.STOP_SIGNAL_SENT:
        docker.kill(item.container_id, "SIGTERM")
        log(f"{scenario.name}: SIGTERM sent to PID 1, as the kubelet does first")
    elif recipe is KubeRecipe.TERMINATING_IN_GRACE:
        api.cluster.delete_job(namespace, item.job, "Foreground")
        log(f"{scenario.name}: Job deleted in the foreground; the pod is Terminating in its grace")
    elif recipe is KubeRecipe.TERMINATING_WITH_FINALIZER:
        # As prefect-kubernetes's kill_infrastructure does: the Job, in the foreground.
        api.cluster.delete_job(namespace, item.job, "Foreground")
        harness.wait_until(
            lambda: not docker.inspect(item.container_id).running, scenario.grace_seconds + 30, "the SIGKILL"
        )
        log(
            f"{scenario.name}: pod deleted; its container was SIGKILLed after the grace; it stays Terminating"
        )
    elif recipe is KubeRecipe.OOM_KILLED:
        Path(str(item.ready_path) + ".grow").write_text("grow")
        harness.wait_until(lambda: docker.inspect(item.container_id).oom_killed, 60, "the OOM kill")
        log(f"{scenario.name}: the flow's container was OOM-killed")
    elif recipe is KubeRecipe.JOB_DELETED_POD_ALIVE:
        api.cluster.delete_job(namespace, item.job, None)
        log(f"{scenario.name}: Job {item.job} deleted (propagation Orphan); its pod runs on")
    elif recipe is KubeRecipe.EVICTED:
        api.cluster.evict(namespace, item.pod)
        harness.wait_until(lambda: not docker.inspect(item.container_id).running, 30, "the eviction's kill")
        log(f"{scenario.name}: the pod was evicted (phase Failed, reason Evicted)")
    elif recipe is KubeRecipe.FORCED_CANCELLED:
        harness.wait_for_state(item.run_id, ["CANCELLING"], timeout=30)
        harness.force_state(item.run_id, "CANCELLED", CANCELLING_TIMEOUT_MESSAGE)
        log(f"{scenario.name}: run forced to Cancelled; its Job runs on")
    if scenario.witnesses_sigterm:
        marker = Path(str(item.ready_path) + ".sigterm")
        harness.wait_until(marker.exists, 30, f"{scenario.name}: the flow to absorb its SIGTERM")
        harness.wait_for_run_log(item.run_id, ABSORBED_LOG_WORDS)


def _stuck_run(harness: LocalPrefect, api: FakeApiServer, item: _Staged, flows_dir: Path) -> StuckPodRun:
    scenario = item.scenario
    deployed = flows_dir / scenario.file
    line = marker_line(deployed)
    return StuckPodRun(
        scenario=scenario.name,
        run_id=item.run_id,
        run_name=harness.read_run(item.run_id).name,
        namespace=scenario.namespace,
        job=item.job,
        pod=item.pod,
        infrastructure_pid=f"{scenario.namespace}:{item.job}",
        container_id=item.container_id,
        expected_cause=scenario.expected_cause,
        expected_kind=scenario.expected_kind,
        expected_state=scenario.expected_state,
        running=scenario.running,
        expected_location=(str(deployed), line) if scenario.expected_kind is not None else None,
    )


def _verify(harness: LocalPrefect, api: FakeApiServer, runs: list[StuckPodRun]) -> None:
    states = harness.read_runs([r.run_id for r in runs])
    problems = []
    for run in runs:
        state = states[run.run_id].state
        state_type = state.type.value if state is not None else None
        if state_type != run.expected_state:
            problems.append(f"{run.scenario}: state {state_type}, expected {run.expected_state}")
        running = api.cluster.docker.inspect(run.container_id).running
        if running != run.running:
            problems.append(f"{run.scenario}: container running={running}, expected {run.running}")
    if problems:
        raise harness.error("staged pod runs are not as expected:\n  " + "\n  ".join(problems))


__all__ = [
    "ADMIN",
    "BASELINE_NAMESPACE",
    "DEBUG_IMAGE",
    "DEBUG_PYSPY",
    "KUBE_POOL",
    "KUBE_SCENARIOS",
    "NAMESPACE",
    "POD_IMAGE",
    "RESTRICTED",
    "KubeDemoEnvironment",
    "KubeRecipe",
    "KubeScenario",
    "StuckPodRun",
    "build_debug_image",
    "kube_demo_environment",
    "remove_images",
    "select_kube_scenarios",
]
