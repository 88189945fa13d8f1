"""Orchestration: API → locate → sample → diagnose → `Report`.

The CLI only translates flags into `Options` and renders the `Report`; every
step in between lives here, under test.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from prefect_cancel_doctor.diagnose.rules import FINAL_STATES, Evidence, diagnose
from prefect_cancel_doctor.errors import ConfigurationError, TargetError
from prefect_cancel_doctor.locate import Location, parse_infrastructure_pid
from prefect_cancel_doctor.locate.process import locate_processes, runner_of
from prefect_cancel_doctor.model import (
    Diagnosis,
    FlowRunRef,
    ProcessSample,
    Report,
    Target,
)
from prefect_cancel_doctor.prefect_api import PrefectApi, to_flow_run_ref
from prefect_cancel_doctor.sample import (
    PermissionDenied,
    ProcessGone,
    PySpyNotFound,
    procfs,
    sample_process,
)

#: Called as work advances: (what is being done, done so far, total).
ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Options:
    """How to sample; every field has a CLI flag and a PCD_* variable."""

    samples: int = 5
    interval: float = 0.2
    native: bool = True
    locals: bool = False
    since: timedelta = timedelta(hours=1)
    parallel: int = 4
    timeout: float = 10.0
    proc_root: str = "/proc"


def _no_progress(what: str, done: int, total: int) -> None:
    pass


@dataclass
class _Job:
    """One run on its way through the pipeline."""

    run: FlowRunRef | None
    location: Location
    samples: list[ProcessSample]


def scan(api: PrefectApi, options: Options, progress: ProgressFn = _no_progress) -> Report:
    """Every run in CANCELLING, plus orphans: final-state runs whose processes still run."""
    progress("querying the Prefect API for runs in Cancelling", 0, 0)
    cancelling = api.cancelling_runs()
    index = procfs.flow_run_processes(options.proc_root)
    seen = {r["id"] for r in cancelling}
    since = datetime.now(timezone.utc) - options.since
    candidates = [r for r in api.runs_ended_since(since, ["CANCELLED"]) if r["id"] not in seen]
    local_ids = set(index) - seen - {r["id"] for r in candidates}
    candidates += [r for r in api.runs_by_id(local_ids) if _state_type(r) in FINAL_STATES]
    # A final-state run is reported only when something of it still runs here.
    orphans = [r for r in candidates if index.get(r["id"]) or _remote_target(r)]
    refs = _refs(api, cancelling + orphans)
    jobs = [_Job(ref, _locate(ref, index, options), []) for ref in refs]
    jobs = [j for j in jobs if j.run is None or j.run.state_type == "CANCELLING" or j.location.pids]
    return _finish(api.url, jobs, options, progress)


def diagnose_run(
    api: PrefectApi, run_id: str, options: Options, progress: ProgressFn = _no_progress
) -> Report:
    """One run, in any state; its cancelling time read from the state history."""
    run = api.flow_run(run_id)
    history = api.state_history(run_id)
    ref = _refs(api, [run], {run_id: history})[0]
    index = procfs.flow_run_processes(options.proc_root)
    return _finish(api.url, [_Job(ref, _locate(ref, index, options), [])], options, progress)


def inspect_pid(pid: int, options: Options, progress: ProgressFn = _no_progress) -> Report:
    """Diagnose a process directly, without the API."""
    snap = procfs.read_process(pid, options.proc_root)
    if snap is None:
        raise TargetError(f"no process with PID {pid}", hint="list candidates with `ps -ef | grep prefect`")
    notes: list[str] = []
    pids: list[tuple[int, str]] = [(pid, "engine")]
    if snap.flow_run_id:
        index = procfs.flow_run_processes(options.proc_root)
        pids += [(p, "child") for p in sorted(index.get(snap.flow_run_id, ())) if p != pid]
        notes.append(f"process {pid} belongs to flow run {snap.flow_run_id} (PREFECT__FLOW_RUN_ID)")
    else:
        notes.append(f"process {pid} carries no PREFECT__FLOW_RUN_ID: it may not be a Prefect flow")
    runner = runner_of(snap, options.proc_root)
    runner_pid = runner.pid if runner else None
    pids = [(p, role) for p, role in pids if p != runner_pid]
    location = Location("process", f"local process {pid}", tuple(pids), runner_pid, None, tuple(notes))
    return _finish(None, [_Job(None, location, [])], options, progress)


# -- steps -------------------------------------------------------------------------


def _state_type(run: dict[str, Any]) -> str | None:
    return (run.get("state") or {}).get("type")


def _remote_target(run: dict[str, Any]) -> bool:
    return parse_infrastructure_pid(run.get("infrastructure_pid")).kind == "docker"


def _refs(
    api: PrefectApi,
    runs: list[dict[str, Any]],
    histories: dict[str, list[dict[str, Any]]] | None = None,
) -> list[FlowRunRef]:
    flows = api.names("flows", (r.get("flow_id") for r in runs))
    deployments = api.names("deployments", (r.get("deployment_id") for r in runs))
    workers: dict[str, list[dict[str, Any]]] = {}
    for pool in sorted({r["work_pool_name"] for r in runs if r.get("work_pool_name")}):
        workers[pool] = api.pool_workers(pool)
    now = datetime.now(timezone.utc)
    return [
        to_flow_run_ref(
            r,
            flows,
            deployments,
            (histories or {}).get(r["id"]),
            workers.get(r.get("work_pool_name") or "", []),
            now,
        )
        for r in runs
    ]


def _locate(ref: FlowRunRef, index: dict[str, list[int]], options: Options) -> Location:
    infra = parse_infrastructure_pid(ref.infrastructure_pid)
    if infra.kind in ("process", "none"):
        return locate_processes(ref.id, infra, index, options.proc_root, ref.work_pool_name)
    if infra.kind == "kubernetes":
        why = (
            f"the run is Kubernetes job {infra.job} in namespace {infra.namespace}: attach with a "
            "debug container sharing the pod's PID namespace (kubectl debug --profile=general "
            "--target=<container>) and run `prefect-cancel-doctor inspect --pid 1` there"
        )
    elif infra.kind == "ecs":
        why = f"the run is ECS task {infra.job}: enable ECS Exec and run the doctor inside the task"
    elif infra.kind == "docker":
        why = (
            f"the run is Docker container {infra.container_id[:12] if infra.container_id else '?'}: "
            "container attach is not implemented in this version; run "
            "`prefect-cancel-doctor inspect --pid <host pid>` with the PID from "
            "`docker inspect -f '{{.State.Pid}}' <container>`"
        )
    else:
        why = f"unrecognised infrastructure_pid {infra.raw!r}"
    return Location(infra.kind, infra.raw or "?", unreachable=why)


def _finish(api_url: str | None, jobs: list[_Job], options: Options, progress: ProgressFn) -> Report:
    _sample_all(jobs, options, progress)
    api_peer = _peer(api_url)
    runs = tuple(_diagnosis(job, options, api_peer) for job in jobs)
    order = {"CANCELLING": 0}
    runs = tuple(
        sorted(
            runs,
            key=lambda d: (
                order.get(d.flow_run.state_type if d.flow_run else "CANCELLING", 1),
                -(d.flow_run.cancelling_for_seconds or 0) if d.flow_run else 0,
            ),
        )
    )
    return Report(api_url, datetime.now(timezone.utc).isoformat(), runs)


def _sample_all(jobs: list[_Job], options: Options, progress: ProgressFn) -> None:
    work = [(job, pid, role) for job in jobs for pid, role in job.location.pids]
    if not work:
        return
    progress("sampling", 0, len(work))

    def one(item: tuple[_Job, int, str]) -> ProcessSample:
        _, pid, role = item
        try:
            return sample_process(
                pid,
                role,
                samples=options.samples,
                interval=options.interval,
                native=options.native,
                locals=options.locals,
                timeout=options.timeout,
                proc_root=options.proc_root,
            )
        except ProcessGone:
            return ProcessSample(pid, role, None, (), False, ("process exited before sampling",))
        except PermissionDenied as exc:
            proc = procfs.read_process(pid, options.proc_root)
            return ProcessSample(pid, role, proc, (), False, (f"permission denied: {exc}",))

    with ThreadPoolExecutor(max_workers=max(1, options.parallel)) as pool:
        try:
            results = pool.map(one, work)
            for done, ((job, _, _), sample) in enumerate(zip(work, results, strict=True), 1):
                job.samples.append(sample)
                progress("sampling", done, len(work))
        except PySpyNotFound as exc:
            raise ConfigurationError(
                f"py-spy not found: {exc}",
                hint="install it with `pip install py-spy` (the wheel ships the binary) "
                "or point PCD_PY_SPY at the binary",
            ) from exc


def _peer(api_url: str | None) -> str | None:
    """ "host:port" of the Prefect API, to leave its connections out of the evidence."""
    if not api_url:
        return None
    url = urlsplit(api_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.hostname}:{port}"


def _diagnosis(job: _Job, options: Options, api_peer: str | None) -> Diagnosis:
    location = job.location
    notes = list(location.notes)
    live: list[ProcessSample] = []
    for sample in job.samples:
        if _still_running(sample, options):
            live.append(sample)
        else:
            notes.append(f"process {sample.pid} ({sample.role}) exited while it was being sampled")
    runner = procfs.read_process(location.runner_pid, options.proc_root) if location.runner_pid else None
    target = Target(
        kind=location.kind,
        description=location.description,
        pid=next((s.pid for s in live if s.role == "engine"), None),
        container_id=location.container_id,
        found_by=location.found_by,
        processes=tuple(live),
    )
    denied = [e for s in live for e in s.errors if e.startswith("permission denied")]
    unreachable = location.unreachable
    if denied and not any(s.dumps for s in live):
        unreachable = f"cannot read the run's processes: {denied[0]}"
    evidence = Evidence(job.run, target, unreachable, runner, tuple(notes), api_peer)
    errors = tuple(e for s in job.samples for e in s.errors)
    return Diagnosis(job.run, target, diagnose(evidence), errors)


def _still_running(sample: ProcessSample, options: Options) -> bool:
    """Re-read /proc after sampling: a process that exited (or whose PID was reused) is gone."""
    if sample.proc is None:
        return False
    now = procfs.read_process(sample.pid, options.proc_root)
    return now is not None and now.state != "Z" and now.start_time_ticks == sample.proc.start_time_ticks
