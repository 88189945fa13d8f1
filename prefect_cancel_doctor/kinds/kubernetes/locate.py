"""Kubernetes: `locate_job` finds a run's Job, its pod, the container running the flow, and how to sample it.

prefect-kubernetes (0.6+, Prefect 3.4.1+) writes `infrastructure_pid` as
``"<namespace>:<job name>"`` (older: ``"<cluster uid>:<namespace>:<job>"``, the
uid being the ``kube-system`` namespace's). An older form's uid is checked
against the connected cluster's: from another cluster's context a Job "not
found" says nothing of the run, so such a run is not attachable from here
(never "infrastructure gone"). The Job controller labels the Job's pods
``job-name=<job>``; the flow's container is the one whose environment carries
the run's ``PREFECT__FLOW_RUN_ID`` (the worker's template names it
``prefect-job``). Nothing is sampled before the pod shows the run's id.

Two attach modes, chosen automatically (``PCD_KUBE_ATTACH=auto``) and reported
as ``target.pod.attach``:

- **node**: the doctor runs on the pod's node (a DaemonSet with ``hostPID``, or
  a root shell there). The container id of the pod's status (``containerd://``,
  ``cri-o://``, ``docker://``) is looked up in every process's
  ``/proc/PID/cgroup`` — containerd (``cri-containerd-<id>.scope`` or
  ``…/kubepods/…/<id>``), CRI-O (``crio-<id>.scope``) and Docker
  (``docker-<id>.scope``, ``/docker/<id>``), cgroup v1 and v2, a process in a
  sub-cgroup of the container's (``…/<id>.scope/init``) included, CRI-O's
  ``crio-conmon-<id>.scope`` (conmon, a host process that watches the container)
  excluded — which gives its host PIDs; they are sampled as local processes.
  With ``shareProcessNamespace: true`` PID 1 is the pod's ``/pause``, in no
  container's cgroup: the flow container's main process is then the root of its
  own processes, and, not being PID 1, it is no PID 1 that drops signals.
  A pod that is Terminating is only ever sampled this way: a kubelet never
  starts an ephemeral container in a terminating pod.
- **ephemeral**: anywhere with RBAC: an ephemeral container joins the flow
  container's PID namespace and runs py-spy (`prefect_cancel_doctor.kinds.kubernetes.pod`).
  Its preconditions are checked first — here a debug image and RBAC
  (SelfSubjectAccessReview of ``patch pods/ephemeralcontainers`` and ``get
  pods/log``), then by the sampler a dry-run patch (``dryRun=All``: Pod Security
  admission, webhooks, a cluster without ephemeral containers) — and a failing
  one is reported with the API's own answer and what to change.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

from prefect_cancel_doctor.clients.kube_api import (
    JOB_NAME_LABEL,
    ContainerSpec,
    JobInfo,
    KubeApiError,
    KubeClient,
    KubeError,
    NodeInfo,
    PodInfo,
    ordered_pods,
)
from prefect_cancel_doctor.clients.kube_config import KubeConfigError, resolve_kube_connection
from prefect_cancel_doctor.core.options import DEBUG_IMAGE_ENV
from prefect_cancel_doctor.kinds import InfraRef, Location
from prefect_cancel_doctor.kinds.docker.locate import can_ptrace_here
from prefect_cancel_doctor.model import InfraKind, PodAttach, PodEventFact, PodFacts
from prefect_cancel_doctor.proc import procfs
from prefect_cancel_doctor.proc.roles import assign_roles

ATTACH_ENV = "PCD_KUBE_ATTACH"
ATTACH_REQUESTS = ("auto", PodAttach.NODE.value, PodAttach.EPHEMERAL.value)
#: Jobs named in one list's label selector (`job-name in (…)`), to keep its URL short.
JOBS_A_LIST = 50
#: Events shown per pod.
MAX_EVENTS = 8
#: A cgroup path component naming a container: its runtime id, bare (cgroupfs driver) or as
#: ``<runtime>-<id>.scope`` (systemd driver: cri-containerd, crio, docker, libpod).
_CGROUP_COMPONENT = re.compile(r"(?:(?P<prefix>[a-z0-9][a-z0-9-]*)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?")


class KubeAttachError(KubeError):
    """The pod cannot be sampled from here; the message says why, with the API's answer."""


# -- node mode: runtime ids → host PIDs ------------------------------------------------------


def cgroup_index(proc_root: str = "/proc") -> dict[str, list[int]]:
    """Container runtime id → the host PIDs whose cgroup ends in it (one pass over /proc)."""
    index: dict[str, list[int]] = {}
    for pid in procfs.pids(proc_root):
        try:
            text = Path(proc_root, str(pid), "cgroup").read_text()
        except OSError:
            continue
        found = container_id_of_cgroup(text)
        if found:
            index.setdefault(found, []).append(pid)
    return index


def container_id_of_cgroup(text: str) -> str | None:
    """The container runtime id in a /proc/PID/cgroup file, if its cgroup is a container's.

    Lines are ``hierarchy:controllers:path`` (v1: one per controller, v2: ``0::path``);
    the id is the deepest path component that names a container, bare or as
    ``<runtime>-<id>.scope``; components below it are sub-cgroups of the container's
    (``…/cri-containerd-<id>.scope/init``). A ``…-conmon-<id>.scope`` component is the
    runtime's monitor (CRI-O's conmon, Podman's), a host process and no container's: None.
    """
    for line in text.splitlines():
        path = line.split(":", 2)[-1].rstrip("/")
        for component in reversed(path.split("/")):
            match = _CGROUP_COMPONENT.fullmatch(component)
            if match is None:
                continue
            prefix = match.group("prefix") or ""
            if prefix == "conmon" or prefix.endswith("-conmon"):
                return None
            return match.group("id")
    return None


class KubeSession:
    """One scan's Kubernetes client and cgroup index, each made on first use."""

    def __init__(
        self, kubeconfig: str | None = None, context: str | None = None, proc_root: str = "/proc"
    ) -> None:
        self._kubeconfig, self._context, self._proc_root = kubeconfig, context, proc_root
        self._client: KubeClient | None = None
        self._cgroups: dict[str, list[int]] | None = None
        self._failed: KubeConfigError | None = None
        self._lock = threading.Lock()
        #: (namespace, Job) → its pods, read together for the scan's runs (`read_pods`).
        self._pods: dict[tuple[str, str], list[PodInfo]] = {}
        self._nodes: dict[str, NodeInfo | KubeApiError | None] = {}
        self._node_lock = threading.Lock()

    def client(self) -> KubeClient:
        """The client (the connection resolved as kubectl does, once: an exec credential plugin runs
        once a scan); raises KubeConfigError when there is none, for every run that asks."""
        with self._lock:
            if self._failed is not None:
                raise self._failed
            if self._client is None:
                try:
                    self._client = KubeClient(resolve_kube_connection(self._kubeconfig, self._context))
                except KubeConfigError as exc:
                    self._failed = exc
                    raise
            return self._client

    def cgroups(self) -> dict[str, list[int]]:
        """This host's container runtime ids → host PIDs (`cgroup_index`), read once."""
        with self._lock:
            if self._cgroups is None:
                self._cgroups = cgroup_index(self._proc_root)
            return self._cgroups

    def read_pods(self, jobs: set[tuple[str, str]]) -> None:
        """Read the pods of these (namespace, Job) pairs together: one list a namespace (by the label
        ``job-name in (…)``) instead of one a run. A failure leaves them to be read one by one (each
        run then says why)."""
        by_namespace: dict[str, list[str]] = {}
        for namespace, job in sorted(jobs):
            by_namespace.setdefault(namespace, []).append(job)
        try:
            client = self.client()
            for namespace, names in by_namespace.items():
                found: dict[tuple[str, str], list[PodInfo]] = {(namespace, n): [] for n in names}
                for pod in pods_of_jobs(client, namespace, names):
                    owner = pod.labels.get(JOB_NAME_LABEL)
                    if owner is not None and (namespace, owner) in found:
                        found[(namespace, owner)].append(pod)
                with self._lock:
                    self._pods.update(found)
        except (KubeError, KubeConfigError):
            return

    def pods_of(self, namespace: str, job: str) -> list[PodInfo] | None:
        """The Job's pods as `read_pods` read them (None: not read; ask the API)."""
        with self._lock:
            return self._pods.get((namespace, job))

    def node(self, client: KubeClient, name: str) -> NodeInfo | None:
        """The node (its Ready condition), read once a scan; raises the API's refusal each time."""
        with self._node_lock:  # the runs located together wait for the first one's read
            if name not in self._nodes:
                try:
                    self._nodes[name] = client.get_node(name)
                except KubeApiError as exc:
                    self._nodes[name] = exc
            known = self._nodes[name]
        if isinstance(known, KubeApiError):
            raise known
        return known

    def close(self) -> None:
        """Close the client's connections."""
        if self._client is not None:
            self._client.close()


# -- locating ---------------------------------------------------------------------------------


def choose_attach(requested: str | None, *, node_visible: bool) -> PodAttach:
    """NODE when the container's processes are here (and may be traced), else EPHEMERAL."""
    mode = (requested or "auto").strip().lower()
    if mode not in ATTACH_REQUESTS:
        raise KubeAttachError(
            f"unknown Kubernetes attach mode {requested!r}",
            hint=f"set {ATTACH_ENV} to one of: {', '.join(ATTACH_REQUESTS)}",
        )
    if mode != "auto":
        return PodAttach(mode)
    return PodAttach.NODE if node_visible else PodAttach.EPHEMERAL


def pods_of_jobs(client: KubeClient, namespace: str, jobs: Sequence[str]) -> list[PodInfo]:
    """The pods of these Jobs of a namespace: one list a `JOBS_A_LIST` of them, by the label
    selector ``job-name in (…)``."""
    return [
        pod
        for i in range(0, len(jobs), JOBS_A_LIST)
        for pod in client.list_pods(namespace, f"{JOB_NAME_LABEL} in ({','.join(jobs[i : i + JOBS_A_LIST])})")
    ]


def locate_job(
    run_id: str,
    ref: InfraRef,
    client: KubeClient,
    *,
    proc_root: str = "/proc",
    attach: str | None = None,
    environ: Mapping[str, str] | None = None,
    cgroups: Callable[[], dict[str, list[int]]] | None = None,
    debug_image: str | None = None,
    session: KubeSession | None = None,
) -> Location:
    """Find a run's Job and pod; say how to sample it (never samples anything). `debug_image`: the
    image of an ephemeral container (`Options.kube_debug_image`; None: none chosen); `session`: the
    scan's, with the pods and nodes it read for every run."""
    namespace, job_name = ref.namespace or "default", ref.job or ""
    description = f"Kubernetes job {namespace}/{job_name}"
    notes: list[str] = []
    try:
        elsewhere = _other_cluster(ref, client, notes)
        job = client.get_job(namespace, job_name)
        pods = session.pods_of(namespace, job_name) if session else None
        if pods is None:
            pods = client.list_pods(namespace, f"{JOB_NAME_LABEL}={job_name}")
    except KubeError as exc:
        return Location(InfraKind.KUBERNETES, description, unreachable=_why(exc))
    if elsewhere is not None:
        if job is not None and any(p.flow_run_id == run_id for p in pods):
            # The run's own pod is here: the recorded uid was not this cluster's kube-system uid
            # (prefect-kubernetes takes PREFECT_KUBERNETES_CLUSTER_UID instead when it is set).
            notes.append(
                f"{elsewhere}; but Job {namespace}/{job_name} and a pod carrying this run's id are in "
                "this cluster: the worker most likely recorded PREFECT_KUBERNETES_CLUSTER_UID instead "
                "of the kube-system namespace's uid"
            )
        else:
            return Location(
                InfraKind.KUBERNETES,
                description,
                notes=tuple(notes),
                unreachable=(
                    f"{elsewhere}: Job {namespace}/{job_name} "
                    + ("has no pod of this run" if job is not None else "is not found")
                    + " here, which says nothing of the run; run the doctor with the run's cluster's "
                    "context (--context, or KUBECONFIG)"
                ),
            )
    mine = [p for p in ordered_pods(pods) if p.flow_run_id in (run_id, None)]
    for other in (p for p in pods if p.flow_run_id not in (run_id, None)):
        notes.append(f"pod {other.name} belongs to flow run {other.flow_run_id}; not sampled")
    if not mine:
        facts = PodFacts(namespace, job_name, job_exists=job is not None, backoff_limit=_backoff(job))
        notes.append(
            f"Job {namespace}/{job_name} " + ("has no pod left" if job else "and its pods no longer exist")
        )
        return Location(InfraKind.KUBERNETES, description, notes=tuple(notes), pod=facts)
    return locate_pod(
        mine[0],
        client,
        run_id=run_id,
        job=job,
        job_name=job_name,
        proc_root=proc_root,
        attach=attach,
        environ=environ,
        cgroups=cgroups,
        notes=notes,
        siblings=len(mine),
        debug_image=debug_image,
        session=session,
    )


def terminating_why(pod: PodInfo) -> str:
    """Why an ephemeral container cannot sample a Terminating pod, and what can."""
    return (
        f"pod {pod.namespace}/{pod.name} is Terminating: a kubelet never starts an ephemeral container "
        f"in a terminating pod; run the doctor on node {pod.node_name or '?'} (node mode) to sample it"
    )


def recorded_cluster_uid(ref: InfraRef) -> str | None:
    """The cluster uid an older `infrastructure_pid` (``"<cluster uid>:<namespace>:<job>"``) names."""
    parts = (ref.raw or "").strip().split(":")
    return parts[0] if len(parts) == 3 and all(parts) else None


def _other_cluster(ref: InfraRef, client: KubeClient, notes: list[str]) -> str | None:
    """Why the run's Job is in another cluster than the connected one (None: the same one, or
    unknown); what could not be checked goes to `notes`."""
    recorded = recorded_cluster_uid(ref)
    if recorded is None:
        return None
    context = client.connection.context or client.connection.source
    try:
        current = client.cluster_uid()
    except KubeApiError as exc:
        notes.append(
            f"the run's Job was recorded in cluster {recorded}; whether the current context {context} is "
            f"that cluster could not be checked (reading namespace kube-system: {exc.code} {exc.reason})"
        )
        return None
    if current is None:
        notes.append(
            f"the run's Job was recorded in cluster {recorded}; the current context {context} has no "
            "kube-system namespace to tell its cluster by"
        )
        return None
    if current == recorded:
        return None
    return f"the run's Job is in cluster {recorded}; the current context {context} is cluster {current}"


def locate_pod(
    pod: PodInfo,
    client: KubeClient,
    *,
    run_id: str | None,
    job: JobInfo | None = None,
    job_name: str | None = None,
    proc_root: str = "/proc",
    attach: str | None = None,
    environ: Mapping[str, str] | None = None,
    cgroups: Callable[[], dict[str, list[int]]] | None = None,
    notes: list[str] | None = None,
    siblings: int = 1,
    debug_image: str | None = None,
    session: KubeSession | None = None,
) -> Location:
    """A pod's facts, and its processes by host PID (node mode) or the plan to sample it (ephemeral)."""
    env = os.environ if environ is None else environ
    notes = list(notes or [])
    description = f"Kubernetes pod {pod.namespace}/{pod.name}"
    if siblings > 1:
        notes.append(f"the Job has {siblings} pods of this run; the newest, {pod.name}, is diagnosed")
    container = flow_container(pod, run_id)
    status = pod.status_of(container.name) if container else None
    events, node_ready, node_reason = _events_and_node(client, pod, notes, session)
    facts = PodFacts(
        namespace=pod.namespace,
        job=job_name or next((o.name for o in pod.owners if o.kind == "Job"), None),
        job_exists=(job is not None) if job_name else None,
        job_deleting=bool(job and job.deletion_timestamp),
        backoff_limit=_backoff(job),
        name=pod.name,
        phase=pod.phase,
        reason=pod.reason,
        message=pod.message,
        node=pod.node_name,
        node_ready=node_ready,
        node_reason=node_reason,
        container=container.name if container else None,
        container_id=status.container_id if status else None,
        container_state=status.state if status else "unknown",
        running=bool(status and status.state == "running"),
        exit_code=status.exit_code if status else None,
        state_reason=status.reason if status else None,
        restart_count=status.restart_count if status else 0,
        last_state_reason=status.last_reason if status else None,
        command=container.argv if container else (),
        image=container.image if container else None,
        deletion_timestamp=pod.deletion_timestamp,
        deletion_grace_period_seconds=pod.deletion_grace_period_seconds,
        termination_grace_period_seconds=pod.termination_grace_period_seconds,
        finalizers=pod.finalizers,
        past_grace_seconds=_since(pod.deletion_timestamp),
        settings=dict(container.settings) if container else {},
        events=events,
        ephemeral_containers=tuple(c.name for c in pod.ephemeral_containers),
    )
    if container is None or status is None or status.state != "running":
        return Location(InfraKind.KUBERNETES, description, notes=tuple(notes), pod=facts)
    if node_ready not in (None, "True"):
        notes.append(
            f"node {pod.node_name} is not Ready ({node_reason}): its kubelet cannot start a debug container"
        )
        return Location(InfraKind.KUBERNETES, description, notes=tuple(notes), pod=facts)

    runtime_id = status.runtime_id or ""
    host_pids = (cgroups or (lambda: cgroup_index(proc_root)))().get(runtime_id, [])
    pid1 = _pid1(host_pids, run_id, proc_root)
    shared = pid1 is None and pod.share_process_namespace
    if shared:
        pid1 = _container_root(host_pids, run_id, proc_root)
    node_visible = pid1 is not None and can_ptrace_here(proc_root)
    try:
        mode = choose_attach(env.get(ATTACH_ENV) if attach is None else attach, node_visible=node_visible)
    except KubeAttachError as exc:
        return Location(
            InfraKind.KUBERNETES, description, notes=tuple(notes), pod=facts, unreachable=_why(exc)
        )
    if mode is PodAttach.EPHEMERAL and pod.deletion_timestamp:
        # The kubelet only runs a terminating pod's termination: an ephemeral container added to it
        # is accepted by the API and stays waiting for good. Node mode is the only way in.
        why = terminating_why(pod)
        if not node_visible:
            return Location(InfraKind.KUBERNETES, description, notes=tuple(notes), pod=facts, unreachable=why)
        notes.append(
            f"pod {pod.namespace}/{pod.name} is Terminating: a kubelet never starts an ephemeral container "
            f"in a terminating pod, so it is sampled from this host, its node {pod.node_name or '?'} "
            "(node mode)"
        )
        mode = PodAttach.NODE
    if mode is PodAttach.NODE:
        if pid1 is None:
            why = (
                f"{ATTACH_ENV}=node, but no process of container {container.name} ({status.container_id}) "
                "is in this host's /proc: the doctor is not on the pod's node (run it in the node-mode "
                "DaemonSet, with hostPID), or its PID namespace hides the host's"
            )
            return Location(InfraKind.KUBERNETES, description, notes=tuple(notes), pod=facts, unreachable=why)
        snapshots = [s for s in (procfs.read_process(p, proc_root) for p in host_pids) if s is not None]
        pids, runner_pid = assign_roles(
            ((s.pid, s.ppid, s.cmdline) for s in snapshots), pid1, is_pid1=not shared
        )
        if shared:
            root = next((s for s in snapshots if s.pid == pid1), None)
            notes.append(
                "the pod shares one PID namespace (shareProcessNamespace): its PID 1 is the pod's "
                f"/pause; container {container.name}'s main process is PID {root.ns_pid if root else '?'} "
                f"of that namespace (host PID {pid1}), and not being PID 1 it gets signals as any process"
            )
        notes.append(
            f"node mode: container {container.name} is {len(snapshots)} process(es) on this host, "
            f"found by its id in /proc/*/cgroup"
        )
        return Location(
            InfraKind.KUBERNETES,
            description,
            tuple(pids),
            runner_pid,
            None,
            tuple(notes),
            pod=dataclasses.replace(facts, attach=PodAttach.NODE),
        )
    problem = ephemeral_preconditions(client, pod, container, debug_image)
    if problem is not None:
        return Location(InfraKind.KUBERNETES, description, notes=tuple(notes), pod=facts, unreachable=problem)
    return Location(
        InfraKind.KUBERNETES,
        description,
        notes=tuple(notes),
        pod=dataclasses.replace(facts, attach=PodAttach.EPHEMERAL),
    )


def flow_container(pod: PodInfo, run_id: str | None) -> ContainerSpec | None:
    """The container that runs the flow: the run's id in its environment, else `prefect-job`,
    else the only one."""
    if run_id:
        found = next((c for c in pod.containers if c.flow_run_id == run_id), None)
        if found:
            return found
    named = next((c for c in pod.containers if c.name == "prefect-job"), None)
    if named:
        return named
    return pod.containers[0] if len(pod.containers) == 1 else None


def ephemeral_preconditions(
    client: KubeClient, pod: PodInfo, container: ContainerSpec, debug_image: str | None
) -> str | None:
    """Why an ephemeral container cannot sample this pod (None: nothing known stops it).

    The debug image, and RBAC through SelfSubjectAccessReview. Admission (Pod
    Security, webhooks) and a cluster without ephemeral containers answer the
    sampler's dry-run patch (`sample.pod`), in the API's own words.
    """
    if not debug_image:
        return (
            f"pod {pod.namespace}/{pod.name} is not on this host's node, and no debug image is configured to "
            f"sample it from an ephemeral container: set {DEBUG_IMAGE_ENV} to an image holding /bin/sh and "
            "py-spy (e.g. built FROM python:3.12-slim with `pip install py-spy`), or run the doctor on the "
            "pod's node (the node-mode DaemonSet)"
        )
    missing = []
    for verb, subresource in (("patch", "ephemeralcontainers"), ("get", "log")):
        try:
            review = client.access_review(verb, "pods", pod.namespace, subresource=subresource)
        except KubeApiError as exc:
            return f"could not ask the API what this user may do (SelfSubjectAccessReview): {exc}"
        if not review.allowed:
            missing.append((review, verb, subresource))
    if missing:
        denied = "; ".join(
            f"{r.what}: not allowed" + (f" ({r.reason})" if r.reason else "") for r, _, _ in missing
        )
        rules = ", ".join(f'{{resources: ["pods/{s}"], verbs: ["{v}"]}}' for _, v, s in missing)
        return (
            f"RBAC forbids the ephemeral container (SelfSubjectAccessReview for {client.connection.source}): "
            f"{denied}. Grant it in a Role of namespace {pod.namespace}: rules {rules} (the README's "
            "Kubernetes section has the Role to copy), or run the doctor on the pod's node"
        )
    return None


def _events_and_node(
    client: KubeClient, pod: PodInfo, notes: list[str], session: KubeSession | None = None
) -> tuple[tuple[PodEventFact, ...], str | None, str | None]:
    events: tuple[PodEventFact, ...] = ()
    try:
        found = client.events_for(pod.namespace, "Pod", pod.name)[-MAX_EVENTS:]
        events = tuple(PodEventFact(e.type, e.reason, e.message, e.count, e.last_seen) for e in found)
    except KubeApiError as exc:
        notes.append(f"the pod's events could not be read: {exc.code} {exc.reason}")
    ready = reason = None
    if pod.node_name:
        try:
            node = session.node(client, pod.node_name) if session else client.get_node(pod.node_name)
        except KubeApiError:
            node = None  # nodes are cluster-scoped; a namespaced Role cannot read them
        if node is not None:
            ready, reason = node.ready, node.reason
    return events, ready, reason


def _container_root(host_pids: list[int], run_id: str | None, proc_root: str) -> int | None:
    """The main process of a container whose PID 1 is elsewhere (a shared PID namespace): the oldest
    of its processes whose parent is not one of them, when it is this run's."""
    members = set(host_pids)
    roots = []
    for pid in host_pids:
        snapshot = procfs.read_process(pid, proc_root, read_sockets=False)
        if snapshot is None or snapshot.ppid in members:
            continue
        if run_id and snapshot.environ_readable and snapshot.flow_run_id not in (run_id, None):
            return None
        roots.append(snapshot)
    if not roots:
        return None
    return min(roots, key=lambda s: (s.start_time_ticks, s.ns_pid)).pid


def _pid1(host_pids: list[int], run_id: str | None, proc_root: str) -> int | None:
    """The container's PID 1 among its host PIDs, when it is this run's (its environment says so)."""
    for pid in host_pids:
        snapshot = procfs.read_process(pid, proc_root, read_sockets=False)
        if snapshot is None or snapshot.ns_pid != 1:
            continue
        if run_id and snapshot.environ_readable and snapshot.flow_run_id not in (run_id, None):
            return None
        return pid
    return None


def _backoff(job: JobInfo | None) -> int | None:
    return job.backoff_limit if job else None


def _since(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return round((datetime.now(timezone.utc) - moment).total_seconds(), 1)


def _why(exc: KubeError) -> str:
    return str(exc) + (f"; {exc.hint}" if exc.hint else "")


__all__ = [
    "ATTACH_ENV",
    "ATTACH_REQUESTS",
    "KubeAttachError",
    "KubeSession",
    "cgroup_index",
    "choose_attach",
    "container_id_of_cgroup",
    "ephemeral_preconditions",
    "flow_container",
    "locate_job",
    "locate_pod",
    "pods_of_jobs",
    "recorded_cluster_uid",
    "terminating_why",
]
