"""Orchestration: API → locate → sample → diagnose → `Report`.

The CLI only translates flags into `Options` and renders the `Report`; every
step in between lives here, under test.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TypeVar
from urllib.parse import urlsplit

from prefect_cancel_doctor.clients.prefect_api import PrefectApi, to_flow_run_ref
from prefect_cancel_doctor.clients.prefect_records import FlowRun, State
from prefect_cancel_doctor.core.links import flow_run_url, ui_base_url
from prefect_cancel_doctor.core.options import Options, default_parallel
from prefect_cancel_doctor.core.progress import ProgressFn
from prefect_cancel_doctor.diagnose import timeline
from prefect_cancel_doctor.diagnose.evidence import Evidence
from prefect_cancel_doctor.diagnose.rules import diagnose
from prefect_cancel_doctor.errors import ConfigurationError, DoctorError, TargetError
from prefect_cancel_doctor.kinds import InfraRef, Location
from prefect_cancel_doctor.kinds.base import Here, Job, Kind
from prefect_cancel_doctor.kinds.process.locate import (
    ENVIRON_UNREADABLE,
    NEEDS_PTRACE,
    adopter_of,
    needs_ptrace,
    runner_of,
)
from prefect_cancel_doctor.kinds.registry import KINDS, kind_of, parse_infrastructure_pid
from prefect_cancel_doctor.model import (
    FINAL_STATES,
    Diagnosis,
    InfraKind,
    ProcessSample,
    ProcSnapshot,
    Report,
    Role,
    SampleFailure,
    StateType,
    Target,
)
from prefect_cancel_doctor.proc import procfs, resources
from prefect_cancel_doctor.sample import (
    NotPython,
    PermissionDenied,
    ProcessGone,
    PySpyNotFound,
    SampleRequest,
    SampleTimeout,
    excepts,
    handler,
    sample_many,
)
from prefect_cancel_doctor.scan.memo import Memo
from prefect_cancel_doctor.scan.run_names import find_run

_T = TypeVar("_T")

#: API requests in flight at once where the doctor sends independent reads together.
CONCURRENT_REQUESTS = 8


def _no_progress(what: str, done: int, total: int) -> None:
    pass


def scan(
    api: PrefectApi,
    options: Options,
    progress: ProgressFn = _no_progress,
    cancelling: list[FlowRun] | None = None,
    memo: Memo | None = None,
) -> Report:
    """Every run in CANCELLING, plus orphans: final-state runs whose processes still run.

    `cancelling`: the runs in Cancelling, where the caller has just read them. `memo`: what the
    previous scan of the same caller kept (`watch`), re-read only where it changed.
    """
    progress("querying the Prefect API for runs in Cancelling", 0, 0)
    since = datetime.now(timezone.utc) - options.since
    # Requests that do not depend on each other go out together (httpx.Client is
    # thread-safe); /proc is read meanwhile.
    with ThreadPoolExecutor(CONCURRENT_REQUESTS) as requests:
        cancelling_page = requests.submit(api.cancelling_runs) if cancelling is None else None
        cancelled_page = requests.submit(api.runs_ended_since, since, [StateType.CANCELLED])
        if memo is not None and memo.names:
            names = {kind: _done(dict(known)) for kind, known in memo.names.items()}
        else:
            names = {kind: requests.submit(api.cancelling_names, kind) for kind in ("flows", "deployments")}
        unreadable: list[int] = []
        if memo is None:
            index = procfs.flow_run_processes(options.proc_root, unreadable)
        if cancelling_page is not None:
            cancelling = cancelling_page.result()
        assert cancelling is not None
        if memo is not None:
            index, unreadable = memo.index(cancelling, cancelled_page.result(), options.proc_root)
        seen = {r.id for r in cancelling}
        candidates = [r for r in cancelled_page.result() if r.id not in seen]
        local_ids = set(index) - seen - {r.id for r in candidates}
        candidates += [r for r in api.runs_by_id(local_ids) if r.state_type in FINAL_STATES]
        # A final-state run is reported only when something of it still runs here.
        here = Here(index, options)
        orphans = [r for r in candidates if index.get(r.id) or _kind(r).may_still_run(r, here)]
        jobs = _jobs(api, requests, cancelling + orphans, here, names, memo=memo)
    jobs = [
        j
        for j in jobs
        if j.run is None
        or j.run.state_type == StateType.CANCELLING
        or kind_of(j.location.kind).still_there(j.location)
    ]
    return _finish(api.url, jobs, here, progress, _partial(unreadable))


def diagnose_run(
    api: PrefectApi,
    run_id: str,
    options: Options,
    progress: ProgressFn = _no_progress,
    memo: Memo | None = None,
) -> Report:
    """One run, in any state, by id or by name; its cancelling time read from the state history.

    `memo`: what the previous diagnosis of the same run kept (`watch`), re-read only where it changed.
    """
    run = find_run(api, run_id)
    if memo is None:
        index = procfs.flow_run_processes(options.proc_root)
    else:
        index, _ = memo.index([run], [], options.proc_root)
    kept = memo.kept(run) if memo is not None else None
    history = kept[1] if kept is not None and kept[1] else api.state_history(run.id)
    names = {kind: _done(dict(known)) for kind, known in memo.names.items()} if memo is not None else None
    with ThreadPoolExecutor(CONCURRENT_REQUESTS) as requests:
        here = Here(index, options)
        jobs = _jobs(api, requests, [run], here, names, histories={run.id: history}, memo=memo)
    return _finish(api.url, jobs, here, progress)


def inspect_pid(
    pid: int, options: Options, progress: ProgressFn = _no_progress, *, any_process: bool = False
) -> Report:
    """Diagnose a process directly, without the API; `TargetError` when it is no Prefect flow
    (`flow_process.ensure_flow`), unless `any_process`; for a kernel thread, or a PID 1 that is no
    flow, even then (`flow_process.ensure_sampleable`)."""
    from prefect_cancel_doctor.kinds.process.flow import ensure_sampleable

    snap = procfs.read_process(pid, options.proc_root)
    if snap is None:
        raise TargetError(f"no process with PID {pid}", hint="list candidates with `ps -ef | grep prefect`")
    ensure_sampleable(pid, options.proc_root)
    notes: list[str] = []
    pids: list[tuple[int, Role]] = [(pid, Role.ENGINE)]
    if not snap.environ_readable:
        notes.append(f"{ENVIRON_UNREADABLE.format(pid=pid)}: {needs_ptrace(pid, options.proc_root)}")
    elif snap.flow_run_id:
        index = procfs.flow_run_processes(options.proc_root)
        pids += [(p, Role.CHILD) for p in sorted(index.get(snap.flow_run_id, ())) if p != pid]
        notes.append(f"process {pid} belongs to flow run {snap.flow_run_id} (PREFECT__FLOW_RUN_ID)")
    else:
        notes.append(f"process {pid} carries no PREFECT__FLOW_RUN_ID: it may not be a Prefect flow")
    runner = runner_of(snap, options.proc_root)
    runner_pid = runner.pid if runner else None
    pids = [(p, role) for p, role in pids if p != runner_pid]
    location = Location(
        InfraKind.PROCESS, f"local process {pid}", tuple(pids), runner_pid, None, tuple(notes)
    )
    report = _finish(None, [Job(None, location, [])], Here({}, options), progress)
    if not any_process and snap.environ_readable and not snap.flow_run_id:
        from prefect_cancel_doctor.kinds.process.flow import ensure_flow

        ensure_flow(pid, report, options.proc_root)
    return report


def inspect_container(name: str, options: Options, progress: ProgressFn = _no_progress) -> Report:
    """Diagnose a Docker container (id or name) directly, without the Prefect API."""
    from prefect_cancel_doctor.clients.docker_api import ContainerNotFound, DockerClient, resolve_endpoint
    from prefect_cancel_doctor.kinds.docker.locate import locate_container

    with DockerClient(resolve_endpoint()) as client:
        try:
            info = client.inspect(name)
        except ContainerNotFound as exc:
            raise TargetError(f"no container {name!r}", hint="list them with `docker ps -a`") from exc
        if info.flow_run_id is None:
            raise TargetError(
                f"container {name!r} carries no PREFECT__FLOW_RUN_ID and no io.prefect.flow-run-id label",
                hint="it does not look like a Prefect flow-run container",
            )
        ref = InfraRef(InfraKind.DOCKER, info.id, container_id=info.id)
        location = locate_container(info.flow_run_id, ref, client=client, proc_root=options.proc_root)
    return _finish(None, [Job(None, location, [])], Here({}, options), progress)


def inspect_ecs_task(target: str, options: Options, progress: ProgressFn = _no_progress) -> Report:
    """Diagnose an ECS task ("CLUSTER/TASK", TASK an id or ARN) without the Prefect API: located as a
    scan would (on this host's Docker engine, or where it can be sampled), sampled and diagnosed."""
    from prefect_cancel_doctor.kinds.ecs.locate import locate_alone

    _, location = locate_alone(target, options)
    return _finish(None, [Job(None, location, [])], Here({}, options), progress)


def inspect_pod(target: str, options: Options, progress: ProgressFn = _no_progress) -> Report:
    """Diagnose a Kubernetes pod ("NAMESPACE/NAME", or NAME in the context's namespace) without the
    Prefect API: its flow container is located, sampled and diagnosed as a scan would."""
    from prefect_cancel_doctor.kinds.kubernetes.kind import session
    from prefect_cancel_doctor.kinds.kubernetes.locate import locate_pod

    here = Here({}, options)
    pod_session = session(here)  # the one the pod is sampled with, too
    client = pod_session.client()
    namespace, _, name = target.rpartition("/")
    namespace = namespace or client.connection.namespace
    pod = client.get_pod(namespace, name)
    if pod is None:
        raise TargetError(
            f"no pod {namespace}/{name} ({client.connection.source})",
            hint=f"list them with `kubectl get pods -n {namespace} -l prefect.io/flow-run-id`",
        )
    if pod.flow_run_id is None:
        raise TargetError(
            f"pod {namespace}/{name} carries no PREFECT__FLOW_RUN_ID and no prefect.io/flow-run-id label",
            hint="it does not look like a Prefect flow-run pod",
        )
    job_name = next((o.name for o in pod.owners if o.kind == "Job"), None) or pod.labels.get("job-name")
    job = client.get_job(namespace, job_name) if job_name else None
    location = locate_pod(
        pod,
        client,
        run_id=pod.flow_run_id,
        job=job,
        job_name=job_name,
        proc_root=options.proc_root,
        cgroups=pod_session.cgroups,
        debug_image=options.kube_debug_image,
    )
    return _finish(None, [Job(None, location, [])], here, progress)


# -- steps -------------------------------------------------------------------------


def _kind(run: FlowRun) -> Kind:
    return kind_of(parse_infrastructure_pid(run.infrastructure_pid).kind)


def _jobs(
    api: PrefectApi,
    requests: ThreadPoolExecutor,
    runs: list[FlowRun],
    here: Here,
    known_names: dict[str, Future[dict[str, str]]] | None = None,
    histories: dict[str, list[State]] | None = None,
    memo: Memo | None = None,
) -> list[Job]:
    """Locate each run, and read (together) the names and the workers its verdict uses.

    `known_names` ("flows", "deployments" → names being read already) leaves
    only the missing ones to ask for. A pool's workers are read only for runs
    whose target is reachable from here: the verdict of an unreachable one
    (`not_attachable`, the first rule) never uses them, and on a fleet of many
    pools they cost one request per pool.
    """
    known = known_names or {}
    flows = requests.submit(_names, api, "flows", [r.flow_id for r in runs], known.get("flows"))
    deployments = requests.submit(
        _names, api, "deployments", [r.deployment_id for r in runs], known.get("deployments")
    )
    refs = [parse_infrastructure_pid(r.infrastructure_pid) for r in runs]
    kept = {r.id: found for r in runs if memo is not None and (found := memo.kept(r)) is not None}
    wanted: set[str] = set()
    for kind in KINDS:
        mine = [r for r, ref in zip(runs, refs, strict=True) if ref.kind == kind.infra and r.id not in kept]
        if mine:
            wanted |= kind.prepare(mine, here)
    if wanted:
        here.deployments.update((d.id, d) for d in api.deployments_by_id(wanted))
    # A kind whose runs cost API reads to locate has them located together, not one after another.
    together = {
        i: requests.submit(kind_of(ref.kind).locate, runs[i], ref, here)
        for i, ref in enumerate(refs)
        if kind_of(ref.kind).concurrent and runs[i].id not in kept
    }
    locations = [
        kept[runs[i].id][0]
        if runs[i].id in kept
        else together[i].result()
        if i in together
        else kind_of(ref.kind).locate(runs[i], ref, here)
        for i, ref in enumerate(refs)
    ]
    diagnosed_here = [r for r, location in zip(runs, locations, strict=True) if location.unreachable is None]
    pools = {r.work_pool_name for r in diagnosed_here if r.work_pool_name}
    workers = {pool: requests.submit(api.pool_workers, pool) for pool in sorted(pools)}
    # The timeline of a run diagnosed here: its state history and logs (one request each).
    known_histories = (histories or {}) | {run_id: found[1] for run_id, found in kept.items() if found[1]}
    history = {
        r.id: requests.submit(_story, api.state_history, r.id)
        for r in diagnosed_here
        if r.id not in known_histories
    }
    logs = {r.id: requests.submit(_story, api.flow_run_logs, r.id) for r in diagnosed_here}
    now = datetime.now(timezone.utc)
    jobs = []
    for r, location in zip(runs, locations, strict=True):
        states = known_histories.get(r.id) or (history[r.id].result() or [] if r.id in history else [])
        ref = to_flow_run_ref(
            r,
            flows.result(),
            deployments.result(),
            states or None,
            workers[r.work_pool_name].result() if r.work_pool_name in workers else None,
            now,
        )
        lines = logs[r.id].result() if r.id in logs else None
        jobs.append(Job(ref, location, [], history=states, logs=lines or [], logs_read=lines is not None))
    if memo is not None:
        memo.names = {"flows": flows.result(), "deployments": deployments.result()}
        memo.remember(runs, locations, {j.run.id: j.history for j in jobs if j.run}, here.options.proc_root)
    return jobs


def _done(value: _T) -> Future[_T]:
    """A future already holding `value`."""
    future: Future[_T] = Future()
    future.set_result(value)
    return future


def _story(read: Callable[[str], list[_T]], run_id: str) -> list[_T] | None:
    """A read for a run's timeline: what cannot be read (None) leaves the timeline shorter, not the scan
    failed."""
    try:
        return read(run_id)
    except DoctorError:
        return None


def _names(
    api: PrefectApi, kind: str, ids: list[str | None], known: Future[dict[str, str]] | None
) -> dict[str, str]:
    names = dict(known.result()) if known else {}
    missing = {i for i in ids if i and i not in names}
    return names | api.names(kind, missing) if missing else names


def _partial(unreadable: list[int]) -> tuple[str, ...]:
    """The scan's error when other processes' environments could not be read.

    Only without CAP_SYS_PTRACE (`procfs.reads_every_process`): what a doctor with it cannot read
    (another user namespace's init, say) is no run of this host's Prefect, and no right to add.
    """
    if not unreadable or procfs.reads_every_process():
        return ()
    return (
        f"partial scan: the environment of {len(unreadable)} process(es) on this host could not be "
        f"read, so runs and orphans among them are not seen; {NEEDS_PTRACE}",
    )


def _finish(
    api_url: str | None,
    jobs: list[Job],
    here: Here,
    progress: ProgressFn,
    errors: tuple[str, ...] = (),
) -> Report:
    options = here.options
    _sample_all(jobs, options, progress)
    for kind in KINDS:  # what the host's PIDs do not reach, each kind its own way
        apart = [job for job in jobs if job.location.kind == kind.infra and _apart(job)]
        if apart:
            kind.sample(apart, here, progress)
    api_peer = _peer(api_url)
    ui = options.ui_url or ui_base_url(api_url)
    # A Runner, or the parent that adopted engines, is read once a scan however many runs it holds.
    parents = _Parents()
    runs = tuple(_diagnosis(job, options, api_peer, ui, parents) for job in jobs)
    order = {StateType.CANCELLING: 0}
    runs = tuple(
        sorted(
            runs,
            key=lambda d: (
                order.get(d.flow_run.state_type if d.flow_run else StateType.CANCELLING, 1),
                -(d.flow_run.cancelling_for_seconds or 0) if d.flow_run else 0,
            ),
        )
    )
    return Report(api_url, datetime.now(timezone.utc).isoformat(), runs, errors)


def _sample_all(jobs: list[Job], options: Options, progress: ProgressFn) -> None:
    """Sample every process of every job, each process once even if several jobs share it.

    All processes are sampled together in rounds (see `sample_many`), at most
    `options.parallel` py-spy dumps at a time.
    """
    work = [(job, pid, role) for job in jobs for pid, role in job.location.pids]
    if not work:
        return
    roles: dict[int, Role] = {}
    for _, pid, role in work:
        roles.setdefault(pid, role)
    requests = [
        SampleRequest(
            pid,
            role,
            samples=options.samples,
            interval=options.interval,
            native=options.native,
            locals=options.locals,
            timeout=options.timeout,
            proc_root=options.proc_root,
        )
        for pid, role in roles.items()
    ]
    progress("sampling", 0, len(requests))
    results = sample_many(
        requests,
        max_workers=options.parallel,
        on_done=lambda done: progress("sampling", done, len(requests)),
    )
    samples: dict[int, ProcessSample] = {}
    for request, result in zip(requests, results, strict=True):
        pid, role = request.pid, request.role
        if isinstance(result, ProcessSample):
            if role == Role.ENGINE and result.dumps:
                flag, installed = handler.sigterm_state(pid, options.proc_root)
                result = dataclasses.replace(result, sigterm_pending=flag, sigterm_handler=installed)
                read_source = functools.partial(procfs.read_source_text, pid, proc_root=options.proc_root)
                swallowing, cleanup = excepts.find_clauses(result, read_source)
                result = dataclasses.replace(result, swallowing=swallowing, cleanup=cleanup)
            samples[pid] = resources.with_resources(result, options.proc_root)
        elif isinstance(result, PySpyNotFound):
            raise ConfigurationError(
                f"py-spy not found: {result}",
                hint="install it with `pip install py-spy` (the wheel ships the binary) "
                "or point PCD_PY_SPY at the binary",
            ) from result
        elif isinstance(result, ProcessGone):
            samples[pid] = ProcessSample(
                pid, role, None, (), False, ("process exited before sampling",), failure=SampleFailure.GONE
            )
        elif isinstance(result, PermissionDenied):
            proc = procfs.read_process(pid, options.proc_root)
            samples[pid] = ProcessSample(
                pid,
                role,
                proc,
                (),
                False,
                (f"permission denied: {result}",),
                failure=SampleFailure.PERMISSION_DENIED,
            )
        else:
            proc = procfs.read_process(pid, options.proc_root)
            failure = SampleFailure.TIMEOUT if isinstance(result, SampleTimeout) else SampleFailure.OTHER
            if isinstance(result, NotPython):
                failure = SampleFailure.NOT_PYTHON
            samples[pid] = ProcessSample(pid, role, proc, (), False, (str(result),), failure=failure)
    for job, pid, role in work:
        sample = samples[pid]
        job.samples.append(sample if sample.role == role else dataclasses.replace(sample, role=role))


def _peer(api_url: str | None) -> str | None:
    """ "host:port" of the Prefect API, to leave its connections out of the evidence."""
    if not api_url:
        return None
    url = urlsplit(api_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.hostname}:{port}"


def _apart(job: Job) -> bool:
    """Whether the job's samples hold its target's own PIDs, not this host's (`Kind.samples_apart`)."""
    return kind_of(job.location.kind).samples_apart(job.location)


@dataclass
class _Parents:
    """What a scan read of the processes its runs' engines hang from, by PID: each Runner, and
    each engine's parent as `adopter_of` reads it (one of them holds many runs)."""

    runners: dict[int, ProcSnapshot | None] = field(default_factory=dict)
    adopters: dict[int, ProcSnapshot | None] = field(default_factory=dict)


def _diagnosis(
    job: Job,
    options: Options,
    api_peer: str | None,
    ui: str | None = None,
    parents: _Parents | None = None,
) -> Diagnosis:
    location = job.location
    apart = _apart(job)
    notes = list(location.notes)
    live: list[ProcessSample] = []
    notes += job.notes
    for sample in job.samples:
        # A sidecar's PIDs are the container's; they cannot be re-read from our /proc.
        if apart or _still_running(sample, options):
            live.append(sample)
        else:
            notes.append(f"process {sample.pid} ({sample.role}) exited while it was being sampled")
    read = _Parents() if parents is None else parents
    runner = job.runner
    if runner is None and location.runner_pid:
        if location.runner_pid not in read.runners:
            read.runners[location.runner_pid] = procfs.read_process(location.runner_pid, options.proc_root)
        runner = read.runners[location.runner_pid]
    target = Target(
        kind=location.kind,
        description=location.description,
        pid=next((s.pid for s in live if s.role == Role.ENGINE), None),
        container_id=location.container_id,
        found_by=location.found_by,
        processes=tuple(live),
        container=location.container,
        pod=location.pod,
        task=location.task,
    )
    denied = [s.errors[0] for s in live if s.failure is SampleFailure.PERMISSION_DENIED and s.errors]
    unreachable = location.unreachable
    if denied and not any(s.dumps for s in live):
        unreachable = f"cannot read the run's processes: {denied[0]}"
    engine = next((s.proc for s in live if s.role == Role.ENGINE and s.proc is not None), None)
    adopter = None
    if runner is None and engine is not None and not apart:
        if engine.ppid not in read.adopters:
            read.adopters[engine.ppid] = adopter_of(engine, options.proc_root)
        adopter = read.adopters[engine.ppid]
    evidence = Evidence(
        job.run,
        target,
        unreachable,
        runner,
        tuple(notes),
        api_peer,
        launched_here=job.location.launched_here,
        logs=tuple(job.logs),
        logs_read=job.logs_read,
        adopter=adopter,
    )
    errors = tuple(e for s in job.samples for e in s.errors)
    story = timeline.build(
        job.run,
        job.history,
        job.logs,
        live if not apart else (),
        runner,
        options.proc_root,
        kind_of(location.kind).timeline(target),
    )
    ui_url = flow_run_url(ui, job.run.id) if job.run else None
    return Diagnosis(job.run, target, diagnose(evidence), errors, story, ui_url)


def _still_running(sample: ProcessSample, options: Options) -> bool:
    """Re-read /proc after sampling: a process that exited (or whose PID was reused) is gone."""
    return sample.proc is not None and procfs.same_process(sample.proc, options.proc_root)


__all__ = [
    "CONCURRENT_REQUESTS",
    "Options",
    "ProgressFn",
    "default_parallel",
    "diagnose_run",
    "inspect_container",
    "inspect_ecs_task",
    "inspect_pid",
    "inspect_pod",
    "scan",
]
