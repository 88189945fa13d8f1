"""The Kubernetes objects the doctor reads, as frozen records."""

from __future__ import annotations

from dataclasses import dataclass, field

#: The label the Job controller puts on a Job's pods (and `batch.kubernetes.io/job-name` since 1.27).
JOB_NAME_LABEL = "job-name"
#: Pod Security admission's enforce label on a namespace.
POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"


@dataclass(frozen=True)
class OwnerRef:
    """One `metadata.ownerReferences` entry."""

    kind: str
    name: str


@dataclass(frozen=True)
class JobInfo:
    """A `batch/v1` Job: what the rules read."""

    namespace: str
    name: str
    uid: str
    labels: dict[str, str] = field(default_factory=dict)
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    backoff_limit: int | None = None
    #: Condition types that are True (Complete, Failed, Suspended, FailureTarget ...), with reasons.
    conditions: tuple[tuple[str, str | None], ...] = ()
    deletion_timestamp: str | None = None
    finalizers: tuple[str, ...] = ()
    start_time: str | None = None


@dataclass(frozen=True)
class ContainerState:
    """One container's status: `running`, `waiting` or `terminated`, with its facts."""

    name: str
    #: running, waiting, terminated, or unknown (no status yet).
    state: str
    #: ``docker://…``, ``containerd://…``, ``cri-o://…`` (None before it starts).
    container_id: str | None = None
    ready: bool = False
    restart_count: int = 0
    #: waiting/terminated reason (OOMKilled, Error, Completed, CrashLoopBackOff …).
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    #: The previous run's termination reason (an OOMKilled restart shows here).
    last_reason: str | None = None
    last_exit_code: int | None = None

    @property
    def runtime_id(self) -> str | None:
        """The bare runtime id (the part after ``scheme://``)."""
        return self.container_id.partition("://")[2] or None if self.container_id else None


@dataclass(frozen=True)
class ContainerSpec:
    """One container of a pod's spec (or an ephemeral container's)."""

    name: str
    image: str | None = None
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    #: The run's id from the environment (PREFECT__FLOW_RUN_ID), if set there.
    flow_run_id: str | None = None
    #: Cancellation-related Prefect settings (never secrets).
    settings: dict[str, str] = field(default_factory=dict)
    #: Ephemeral containers only: the container whose namespaces it joins.
    target_container: str | None = None
    #: securityContext.capabilities.add
    capabilities_add: tuple[str, ...] = ()

    @property
    def argv(self) -> tuple[str, ...]:
        """command + args as the runtime runs them (the image's own entrypoint when both are empty)."""
        return self.command + self.args


@dataclass(frozen=True)
class PodInfo:
    """A pod: the facts the doctor reads (spec, status, metadata)."""

    namespace: str
    name: str
    uid: str
    labels: dict[str, str] = field(default_factory=dict)
    owners: tuple[OwnerRef, ...] = ()
    node_name: str | None = None
    #: Pending, Running, Succeeded, Failed, Unknown.
    phase: str = "Unknown"
    #: status.reason (Evicted, NodeLost, DeadlineExceeded …) and its message.
    reason: str | None = None
    message: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    termination_grace_period_seconds: int | None = None
    finalizers: tuple[str, ...] = ()
    start_time: str | None = None
    containers: tuple[ContainerSpec, ...] = ()
    statuses: tuple[ContainerState, ...] = ()
    ephemeral_containers: tuple[ContainerSpec, ...] = ()
    ephemeral_statuses: tuple[ContainerState, ...] = ()
    share_process_namespace: bool = False
    #: True condition types (Ready, DisruptionTarget …) with their reasons.
    conditions: tuple[tuple[str, str | None], ...] = ()
    #: The run's id from a container's environment or the pod's labels.
    flow_run_id: str | None = None
    qos_class: str | None = None

    def status_of(self, container: str) -> ContainerState | None:
        """The status of a container (or an ephemeral container) by name."""
        return next((s for s in (*self.statuses, *self.ephemeral_statuses) if s.name == container), None)

    def spec_of(self, container: str) -> ContainerSpec | None:
        """The spec of a container (or an ephemeral container) by name."""
        return next((c for c in (*self.containers, *self.ephemeral_containers) if c.name == container), None)


@dataclass(frozen=True)
class PodEvent:
    """A core/v1 Event about an object (Killing, FailedKillPod, Evicted, OOMKilling …)."""

    type: str
    reason: str
    message: str
    count: int = 1
    #: The latest time it was seen (lastTimestamp, else eventTime, else firstTimestamp).
    last_seen: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class NodeInfo:
    """A node's readiness."""

    name: str
    #: Ready condition: True, False or Unknown (None: not reported).
    ready: str | None
    reason: str | None = None
    message: str | None = None
    last_transition: str | None = None


@dataclass(frozen=True)
class AccessReview:
    """A SelfSubjectAccessReview's answer for one verb on one resource."""

    verb: str
    resource: str
    subresource: str | None
    namespace: str | None
    allowed: bool
    denied: bool = False
    reason: str | None = None

    @property
    def what(self) -> str:
        """``patch pods/ephemeralcontainers in namespace prod``."""
        target = self.resource + (f"/{self.subresource}" if self.subresource else "")
        return f"{self.verb} {target}" + (f" in namespace {self.namespace}" if self.namespace else "")


@dataclass(frozen=True)
class NamespaceInfo:
    """A namespace's labels (Pod Security admission reads its enforce level there)."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def pod_security(self) -> str | None:
        """The enforced Pod Security level (privileged, baseline, restricted), if labelled."""
        return self.labels.get(POD_SECURITY_ENFORCE)
