"""Attach mode "ephemeral": sample a pod's flow container from an ephemeral container.

Where the doctor is not on the pod's node, it adds an ephemeral container to the
pod (``PATCH pods/{pod}/ephemeralcontainers``, a strategic merge patch keyed by
name) that

- joins the flow container's PID namespace (``targetContainerName``), so PID 1
  it sees is the flow container's PID 1;
- adds ``SYS_PTRACE`` (``securityContext.capabilities.add``), which py-spy needs;
- runs the debug image (``PCD_KUBE_DEBUG_IMAGE``: ``/bin/sh`` and py-spy, at
  ``PCD_KUBE_DEBUG_PYSPY``, default ``py-spy`` on its PATH) with the same shell
  script as the Docker sidecar (`sample.sidecar`): for a few rounds, the kernel's
  view of every process (``/proc/PID/{stat,status}``, each thread's
  ``stat``/``status``/``wchan``/``syscall``) and ``py-spy dump --json``;
- repeats that every `DEBUG_PERIOD` seconds until `DEBUG_TTL` has passed, then
  exits.

Its output is read from ``pods/log?container=<name>``, and the host rebuilds the
same `ProcessSample` records the other modes give (PIDs are the pod's namespace
PIDs; source lines are not read: no file of the pod can be read without exec).

A kubelet never starts an ephemeral container in a pod that is Terminating (it
only runs the pod's termination): the API accepts it and its status stays
``waiting`` for good. So no container is added to a Terminating pod, and one
that waits while its pod turns Terminating is given up at once, with the reason
(the locator samples such a pod in node mode when this host is its node).

Logs are read with their timestamps: a new container's whole log (its first
round may take longer than any fixed window), a reused one's last few periods,
then from the start of the round awaited on (``sinceTime``, to the second as
the API passes it on; the rounds are then told apart by their timestamps).

In a pod with ``shareProcessNamespace: true`` the ephemeral container sees the
whole pod: PID 1 is the pod's ``/pause``, each container's main process has
parent 0 (its parent is outside the namespace). The flow container's processes
are then the tree below the main process that holds the engine (else the one
running the container's command, else the only one), and that main process is
no PID 1 (`locate.roles.assign_roles`, `is_pid1=False`).

An ephemeral container can be neither removed nor restarted: it **stays in the
pod's spec until the pod is deleted**. So the doctor names its containers
``pcd-doctor-<target container>-<n>`` and a later scan within `DEBUG_TTL` reuses
the running one (it waits for its next round) instead of adding another; only a
scan after it has exited adds ``-<n+1>``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from prefect_cancel_doctor.clients.kube_api import (
    KubeApiError,
    KubeClient,
    KubeError,
    KubeNotFound,
    PodInfo,
)
from prefect_cancel_doctor.clients.kube_config import KubeConfigError
from prefect_cancel_doctor.core.progress import ProgressFn
from prefect_cancel_doctor.kinds import Location
from prefect_cancel_doctor.kinds.kubernetes.locate import (
    KubeSession,
    pods_of_jobs,
    terminating_why,
)
from prefect_cancel_doctor.kinds.kubernetes.pod_log import ROUND_END, flow_root
from prefect_cancel_doctor.kinds.kubernetes.pod_log import rounds as read_rounds

# The Docker sidecar's script and reader, shared so both give the same records from the same /proc view.
from prefect_cancel_doctor.sample.namespace import (
    PROBE_ENV,
    SCRIPT,
    ContainerSample,
    build_sample,
    parse_script_output,
    probe_source,
    scratch_root,
)

#: Name prefix of the doctor's ephemeral containers.
DEBUG_PREFIX = "pcd-doctor"
PYSPY_ENV = "PCD_KUBE_DEBUG_PYSPY"
TTL_ENV = "PCD_KUBE_DEBUG_TTL"
#: Seconds an ephemeral container keeps sampling (a scan within that time reuses it).
DEBUG_TTL = 300
#: Seconds between two of its rounds.
DEBUG_PERIOD = 10
#: How long to wait for the kubelet to start it.
START_TIMEOUT = 90.0
#: A reused container's latest round is used when it began within DEBUG_PERIOD + this (s) of
#: its log's last line (the node's clock, not ours).
FRESH_SLACK = 5
#: Requests in flight at once (patches, then the logs of containers that run).
PARALLEL_PODS = 16
#: Seconds between two reads of the pods waited on.
POLL = 0.5
#: An ephemeral container's states in which it has a log to read.
_STARTED = ("running", "terminated")

_T = TypeVar("_T")
#: Plain py-spy dumps per process in the rounds after the first (what a reusing scan reads).
REUSE_SAMPLES = 2

# Runs the sidecar script (from PCD_SCRIPT) once a period until the TTL is spent.
# Arguments: py-spy, rounds, interval, cycles, period, then py-spy's extra flags.
# The first round is the scan's (its samples, its py-spy flags); later ones, kept for reuse, are
# light: REUSE_SAMPLES plain dumps (no --native: its unwinding is what costs).
_LOOP = r"""
Y=$1; ROUNDS=$2; INTERVAL=$3; CYCLES=$4; PERIOD=$5; LATER=$6; shift 6
c=1
while [ "$c" -le "$CYCLES" ]; do
  printf '\n@@PCD cycle %s\n' "$c"
  if [ "$c" = 1 ]; then
    sh -c "$PCD_SCRIPT" pcd-doctor "$Y" "$ROUNDS" "$INTERVAL" "$@"
  else
    sh -c "$PCD_SCRIPT" pcd-doctor "$Y" "$LATER" "$INTERVAL"
  fi
  c=$((c + 1))
  if [ "$c" -le "$CYCLES" ]; then sleep "$PERIOD"; fi
done
"""


class PodSampleError(KubeError):
    """The ephemeral container could not be added or said nothing usable; the message says why."""


def debug_container_spec(
    name: str,
    target: str,
    image: str,
    *,
    pyspy: str = "py-spy",
    samples: int = 5,
    interval: float = 0.2,
    native: bool = True,
    locals: bool = False,
    ttl: int = DEBUG_TTL,
    period: int = DEBUG_PERIOD,
) -> dict[str, Any]:
    """The EphemeralContainer the doctor adds (the body of the strategic merge patch's list)."""
    flags = (["--native"] if native else []) + (["--locals"] if locals else [])
    cycles = max(1, ttl // max(1, period))
    return {
        "name": name,
        "image": image,
        "command": ["/bin/sh", "-c", _LOOP, "pcd-doctor"],
        "args": [
            pyspy,
            str(max(1, samples)),
            f"{interval:g}",
            str(cycles),
            str(period),
            str(REUSE_SAMPLES),
            *flags,
        ],
        "env": [
            {"name": "PCD_SCRIPT", "value": SCRIPT},
            {"name": PROBE_ENV, "value": probe_source()},
            {"name": "RUST_BACKTRACE", "value": "0"},
        ],
        "targetContainerName": target,
        "securityContext": {"capabilities": {"add": ["SYS_PTRACE"]}},
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
        "stdin": False,
        "tty": False,
    }


def _ordinal(name: str, target: str) -> int | None:
    match = re.fullmatch(rf"{re.escape(DEBUG_PREFIX)}-{re.escape(target)}-(\d+)", name)
    return int(match.group(1)) if match else None


def reusable(pod: PodInfo, target: str, image: str) -> tuple[str | None, int]:
    """The doctor's running ephemeral container for `target` (if any), and the next free ordinal."""
    running = None
    highest = 0
    for spec in pod.ephemeral_containers:
        number = _ordinal(spec.name, target)
        if number is None:
            continue
        highest = max(highest, number)
        status = pod.status_of(spec.name)
        if spec.image == image and status is not None and status.state == "running":
            running = spec.name
    return running, highest + 1


@dataclasses.dataclass(frozen=True)
class PodRequest:
    """A located pod to sample: its `target` container, the Job it belongs to (None: none, or not
    known), the run it holds."""

    namespace: str
    name: str
    target: str
    job: str | None = None
    flow_run_id: str | None = None


@dataclasses.dataclass
class _Waiting:
    """One pod's ephemeral container, added (or reused), until its round is read."""

    request: PodRequest
    pod: PodInfo  # as it was before the container was added
    name: str
    reused: bool
    started: float
    deadline: float
    newer_than: datetime | None = None  # the round awaited on began after this (the node's clock)
    cycle: str | None = None  # the round read
    state: str | None = None  # the container's state when last seen


def sample_pods(
    client: KubeClient,
    requests: list[PodRequest],
    *,
    image: str,
    samples: int = 5,
    interval: float = 0.2,
    native: bool = True,
    locals: bool = False,
    timeout: float = 120.0,
    environ: Mapping[str, str] | None = None,
    progress: ProgressFn | None = None,
) -> list[tuple[ContainerSample, str, bool] | KubeError]:
    """Sample each requested pod's `target` container from an ephemeral container, all at once.

    Every container is added first (a dry run, then the patch; a running one of the doctor's is
    reused), then all are waited on together: one read of the pods a poll (a list a namespace, by
    their Jobs' label), and each one's log read once its container runs, until its round is
    complete. Returns for each request the sample, the ephemeral container's name and whether it
    was reused, or the error that stopped it (`PodSampleError` with the API's own answer when the
    patch is refused); one pod's error is that pod's alone.
    """
    env = os.environ if environ is None else environ
    report = progress or (lambda what, done, total: None)
    total = len(requests)
    outcomes: list[tuple[ContainerSample, str, bool] | KubeError | None] = [None] * total
    waiting: dict[int, _Waiting] = {}
    with ThreadPoolExecutor(max(1, min(total, PARALLEL_PODS))) as pool:
        report(f"adding ephemeral containers to {total} pod(s)", 0, total)
        try:
            before = _pods_now(client, requests, alone=total == 1)
        except KubeError as exc:
            return [exc for _ in requests]

        def begin(index: int) -> _Waiting:
            request = requests[index]
            return _begin(
                client,
                request,
                before.get((request.namespace, request.name)),
                image=image,
                pyspy=env.get(PYSPY_ENV) or "py-spy",
                ttl=int(env.get(TTL_ENV) or DEBUG_TTL),
                samples=samples,
                interval=interval,
                native=native,
                locals=locals,
                timeout=timeout,
            )

        for index, outcome in enumerate(pool.map(_catching(begin), range(total))):
            if isinstance(outcome, KubeError):
                outcomes[index] = outcome
            else:
                waiting[index] = outcome
        for index, wait in waiting.items():
            if wait.cycle is not None:  # a reused container's fresh round
                outcomes[index] = _catching(_finish)(wait)
        pending = [i for i in waiting if outcomes[i] is None]
        while pending:
            report(_waiting_for(pending, waiting, total), total - len(pending), total)
            polled = time.monotonic()
            try:
                now = _pods_now(client, [requests[i] for i in pending], alone=total == 1)
            except KubeError as exc:  # the same answer for every pod still waited on
                for index in pending:
                    outcomes[index] = exc
                break
            looks = [(waiting[i], now.get((requests[i].namespace, requests[i].name))) for i in pending]
            advance = _catching(lambda look: _advance(client, *look))
            for index, seen in zip(pending, pool.map(advance, looks), strict=True):
                if isinstance(seen, KubeError):
                    outcomes[index] = seen
                elif seen:
                    outcomes[index] = _catching(_finish)(waiting[index])
            pending = [i for i in pending if outcomes[i] is None]
            if pending:
                time.sleep(max(0.0, POLL - (time.monotonic() - polled)))
    report(f"sampled {total} pod(s) from ephemeral containers", total, total)
    return [o for o in outcomes if o is not None]


def _waiting_for(pending: list[int], waiting: dict[int, _Waiting], total: int) -> str:
    """What the sampler waits for, as the progress line says it."""
    starting = sum(1 for i in pending if waiting[i].state not in _STARTED)
    parts = []
    if starting:
        parts.append(f"{starting} of {total} ephemeral containers to start")
    if len(pending) - starting:
        parts.append(f"{len(pending) - starting} of {total} to complete a round")
    return "waiting for " + " and ".join(parts)


def _catching(work: Callable[[Any], _T]) -> Callable[[Any], _T | KubeError]:
    def run(argument: Any) -> _T | KubeError:
        try:
            return work(argument)
        except KubeError as exc:
            return exc

    return run


def _pods_now(
    client: KubeClient, requests: list[PodRequest], *, alone: bool = False
) -> dict[tuple[str, str], PodInfo]:
    """The requested pods as they are now (absent: deleted): one GET for a pod sampled `alone`, else
    one list a namespace, by their Jobs' label where each has one."""
    if alone and len(requests) == 1:
        only = requests[0]
        pod = client.get_pod(only.namespace, only.name)
        return {(only.namespace, only.name): pod} if pod is not None else {}
    found: dict[tuple[str, str], PodInfo] = {}
    by_namespace: dict[str, list[PodRequest]] = {}
    for request in requests:
        by_namespace.setdefault(request.namespace, []).append(request)
    for namespace, wanted in by_namespace.items():
        jobs = sorted({r.job for r in wanted if r.job})
        if any(r.job is None for r in wanted):
            pods = client.list_pods(namespace)  # a pod of no Job: the whole namespace
        else:
            pods = pods_of_jobs(client, namespace, jobs)
        names = {r.name for r in wanted}
        found.update({(namespace, pod.name): pod for pod in pods if pod.name in names})
    return found


def _begin(
    client: KubeClient,
    request: PodRequest,
    pod: PodInfo | None,
    *,
    image: str,
    pyspy: str,
    ttl: int,
    samples: int,
    interval: float,
    native: bool,
    locals: bool,
    timeout: float,
) -> _Waiting:
    """Add the pod's ephemeral container (or find the doctor's running one) and, for a reused one,
    whether its latest round is fresh enough."""
    started = time.monotonic()
    namespace, pod_name, target = request.namespace, request.name, request.target
    if pod is None:
        raise PodSampleError(f"pod {namespace}/{pod_name} no longer exists")
    name, ordinal = reusable(pod, target, image)
    reused = name is not None
    if name is None:
        if pod.deletion_timestamp:
            raise PodSampleError(terminating_why(pod))
        name = f"{DEBUG_PREFIX}-{target}-{ordinal}"
        spec = debug_container_spec(
            name,
            target,
            image,
            pyspy=pyspy,
            samples=samples,
            interval=interval,
            native=native,
            locals=locals,
            ttl=ttl,
        )
        try:
            # First a dry run: validation and admission answer without leaving anything in the pod.
            client.add_ephemeral_container(namespace, pod_name, spec, dry_run=True)
            client.add_ephemeral_container(namespace, pod_name, spec)
        except KubeApiError as exc:
            raise PodSampleError(refusal(exc, namespace, pod_name)) from exc
    wait = _Waiting(request, pod, name, reused, started, started + max(timeout, START_TIMEOUT))
    if reused:
        rounds, last_line = read_rounds(_read(client, wait))
        complete = [r for r in rounds if r[2] is not None]
        if (
            complete
            and last_line
            and complete[-1][0] >= last_line - timedelta(seconds=DEBUG_PERIOD + FRESH_SLACK)
        ):
            wait.cycle = complete[-1][2]  # it began within the last period: as fresh as the next one
        elif rounds:
            wait.newer_than = rounds[-1][0]
    return wait


def _read(client: KubeClient, wait: _Waiting) -> str:
    """The container's log with timestamps: only the last few periods of it (a round is shorter than
    a period), or from the round awaited on, or all of a new one's."""
    namespace, pod = wait.request.namespace, wait.request.name
    if wait.newer_than is not None:  # the round awaited on began then (the node's clock)
        return client.pod_log(namespace, pod, wait.name, timestamps=True, since_time=wait.newer_than)
    if wait.reused:
        return client.pod_log(namespace, pod, wait.name, timestamps=True, since_seconds=DEBUG_PERIOD * 3)
    return client.pod_log(namespace, pod, wait.name, timestamps=True)  # ours, new: all of it


def _advance(client: KubeClient, wait: _Waiting, current: PodInfo | None) -> bool:
    """One look at a waited-on container, its pod as read now (None: gone): True once its round is
    read; raises `PodSampleError` when it never will be."""
    namespace, pod_name, name = wait.request.namespace, wait.request.name, wait.name
    if current is None:
        raise PodSampleError(f"pod {namespace}/{pod_name} was deleted while it was being sampled")
    found = current.status_of(name)
    status = (found.state, found.reason, found.message) if found else None
    wait.state = status[0] if status else None
    if status is not None and status[0] == "waiting" and status[1] in ("ErrImagePull", "ImagePullBackOff"):
        raise PodSampleError(
            f"the ephemeral container {name} cannot start: {status[1]} ({status[2]}); "
            f"set {'PCD_KUBE_DEBUG_IMAGE'} to an image the node can pull"
        )
    if current.deletion_timestamp and (status is None or status[0] == "waiting"):
        raise PodSampleError(f"the ephemeral container {name} will never start: {terminating_why(current)}")
    if status is not None and status[0] in _STARTED and _may_have_ended(client, wait, status[0]):
        stamped = _read(client, wait)
        rounds, _ = read_rounds(stamped)
        done = [r for r in rounds if r[2] is not None and (wait.newer_than is None or r[0] > wait.newer_than)]
        if done:
            wait.cycle = done[-1][2]
            return True
        if status[0] == "terminated":
            raise PodSampleError(
                f"the ephemeral container {name} exited ({status[1]}) without a complete round: "
                f"{stamped[-500:].strip()}"
            )
    if time.monotonic() > wait.deadline:
        raise PodSampleError(
            f"the ephemeral container {name} gave no complete round within "
            f"{wait.deadline - wait.started:.0f} s"
        )
    return False


def _may_have_ended(client: KubeClient, wait: _Waiting, state: str) -> bool:
    """Whether a round may have ended since the last look: the log's last line is a round's end
    (a round runs seconds, then the container waits a period). A running container's whole log
    is read only then: its rounds are thousands of lines, and it is looked at every `POLL`."""
    if state != "running":
        return True
    namespace, pod = wait.request.namespace, wait.request.name
    tail = client.pod_log(namespace, pod, wait.name, tail_lines=1)
    return tail.rstrip("\n").endswith(ROUND_END.strip())


def _finish(wait: _Waiting) -> tuple[ContainerSample, str, bool]:
    """The sample its round gives, as the other modes give it."""
    assert wait.cycle is not None
    namespace, pod_name, target = wait.request.namespace, wait.request.name, wait.request.target
    pod, name, reused = wait.pod, wait.name, wait.reused
    collected = parse_script_output(wait.cycle.encode())
    shared: tuple[str, ...] = ()
    with tempfile.TemporaryDirectory(prefix="pcd-pod-", dir=scratch_root()) as scratch:
        if pod.share_process_namespace:
            flow_spec = pod.spec_of(target)
            root = flow_root(collected, flow_spec.argv if flow_spec else ())
            if root is None:
                raise PodSampleError(
                    f"pod {namespace}/{pod_name} shares one PID namespace (shareProcessNamespace) and no "
                    f"process in it can be told for container {target}'s main process; run the doctor on "
                    "the pod's node (node mode), where its cgroup tells its processes"
                )
            sample = build_sample(collected, Path(scratch), wait.request.flow_run_id, root)
            shared = (
                f"pod {namespace}/{pod_name} shares one PID namespace (shareProcessNamespace): PID 1 is the "
                f"pod's /pause; container {target}'s main process is PID {root}, and not being PID 1 it "
                "gets signals as any process",
            )
        else:
            sample = build_sample(collected, Path(scratch), wait.request.flow_run_id)
    notes = (
        f"sampled from ephemeral container {name} of pod {namespace}/{pod_name}"
        + (" (reused: it was still sampling)" if reused else "")
        + "; an ephemeral container stays in the pod's spec until the pod is deleted",
        *shared,
    )
    sample = dataclasses.replace(
        sample, method="ephemeral", notes=notes, seconds=round(time.monotonic() - wait.started, 3)
    )
    return sample, name, reused


def sample_pod(
    client: KubeClient,
    namespace: str,
    pod_name: str,
    target: str,
    *,
    image: str,
    flow_run_id: str | None,
    samples: int = 5,
    interval: float = 0.2,
    native: bool = True,
    locals: bool = False,
    timeout: float = 120.0,
    environ: Mapping[str, str] | None = None,
) -> tuple[ContainerSample, str, bool]:
    """Sample one pod's `target` container from an ephemeral container (`sample_pods`).

    Returns the sample, the ephemeral container's name, and whether it was reused.
    Raises `PodSampleError` with the API's own answer when the patch is refused.
    """
    (outcome,) = sample_pods(
        client,
        [PodRequest(namespace, pod_name, target, flow_run_id=flow_run_id)],
        image=image,
        samples=samples,
        interval=interval,
        native=native,
        locals=locals,
        timeout=timeout,
        environ=environ,
    )
    if isinstance(outcome, KubeError):
        raise outcome
    return outcome


def sample_pod_jobs(
    session: KubeSession,
    located: list[tuple[Location, str | None]],
    *,
    image: str,
    samples: int,
    interval: float,
    native: bool,
    locals: bool,
    timeout: float,
    progress: ProgressFn | None = None,
) -> list[tuple[Location, ContainerSample | None]]:
    """Sample located pods (attach "ephemeral", each with its run's id) together with the debug
    `image` (`--debug-image`, "": none chosen); a pod's refusal becomes its location's `unreachable`."""
    requests = []
    for location, run_id in located:
        pod = location.pod
        assert pod is not None and pod.name is not None and pod.container is not None
        requests.append(PodRequest(pod.namespace, pod.name, pod.container, pod.job, run_id))
    outcomes: Sequence[tuple[ContainerSample, str, bool] | KubeError | KubeConfigError]
    try:
        outcomes = sample_pods(
            session.client(),
            requests,
            image=image,
            samples=samples,
            interval=interval,
            native=native,
            locals=locals,
            timeout=timeout,
            progress=progress,
        )
    except KubeConfigError as exc:
        outcomes = [exc] * len(requests)
    results: list[tuple[Location, ContainerSample | None]] = []
    for (location, _), outcome in zip(located, outcomes, strict=True):
        if isinstance(outcome, (KubeError, KubeConfigError)):
            why = str(outcome) + (f"; {outcome.hint}" if outcome.hint else "")
            results.append((dataclasses.replace(location, unreachable=why), None))
            continue
        sampled, name, _ = outcome
        pod = location.pod
        assert pod is not None
        containers = pod.ephemeral_containers + ((name,) if name not in pod.ephemeral_containers else ())
        facts = dataclasses.replace(pod, debug_container=name, ephemeral_containers=containers)
        results.append((dataclasses.replace(location, pod=facts), sampled))
    return results


def refusal(exc: KubeApiError, namespace: str, pod: str) -> str:
    """Why the API refused the ephemeral container, with its own words and what to change."""
    said = f"{exc.code} {exc.reason}: {exc.api_message}"
    if isinstance(exc, KubeNotFound) and "could not find the requested resource" in exc.api_message:
        return (
            "this cluster does not serve ephemeral containers "
            f"(PATCH pods/{pod}/ephemeralcontainers answered {said}): "
            "they need Kubernetes 1.23+ (the EphemeralContainers feature); run the doctor on the "
            "pod's node (node mode) instead"
        )
    if exc.code == 403 and "PodSecurity" in exc.api_message:
        return (
            f"Pod Security admission refused the ephemeral container ({said}): relabel namespace "
            f"{namespace} `pod-security.kubernetes.io/enforce=privileged` for the time of the diagnosis, "
            "or run the doctor on the pod's node (node mode)"
        )
    if exc.code == 403:
        return (
            f"RBAC refused the ephemeral container ({said}): grant `patch` on `pods/ephemeralcontainers` and "
            f"`get` on `pods/log` in namespace {namespace} (the README's Kubernetes Role)"
        )
    return f"the API refused the ephemeral container ({said})"


__all__ = [
    "DEBUG_PERIOD",
    "DEBUG_PREFIX",
    "DEBUG_TTL",
    "PARALLEL_PODS",
    "PYSPY_ENV",
    "TTL_ENV",
    "PodRequest",
    "PodSampleError",
    "debug_container_spec",
    "refusal",
    "reusable",
    "sample_pod",
    "sample_pod_jobs",
    "sample_pods",
]
