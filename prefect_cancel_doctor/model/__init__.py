"""The report model: frozen dataclasses that every renderer reads.

`Report.to_dict()` is the JSON contract described in the README (causes and
their evidence: docs/how-cancellation-works.md); the terminal view walks the same objects, so
the two cannot drift apart.

Split by concern: the vocabularies (`vocabulary`, `causes`), what the API says about a run
(`runs`), what was read about its processes (`samples`), where it lives (`targets`), the
verdict and the report (`report`), and the JSON form (`serialise`). Import every name from
here: `from prefect_cancel_doctor.model import Cause`.
"""

from __future__ import annotations

from prefect_cancel_doctor.model.causes import TRAITS, Cause, CauseTraits
from prefect_cancel_doctor.model.report import (
    SCHEMA_VERSION,
    BlockingCall,
    Delivery,
    Diagnosis,
    Published,
    Report,
    TimelineEntry,
    Verdict,
)
from prefect_cancel_doctor.model.runs import (
    DEFAULT_HEARTBEAT_SECONDS,
    FlowRunRef,
    WorkerInfo,
    heartbeat_due_seconds,
)
from prefect_cancel_doctor.model.samples import (
    CleanupClause,
    Frame,
    KernelThread,
    ProcessSample,
    ProcSnapshot,
    Resource,
    SigtermHandler,
    SocketPeer,
    SwallowingExcept,
    ThreadSample,
)
from prefect_cancel_doctor.model.serialise import samples_in_place_of_stacks, to_plain
from prefect_cancel_doctor.model.targets import (
    CONTAINER_NOT_FOUND,
    TASK_GONE_STATUSES,
    ContainerEvent,
    ContainerInfo,
    ContainerProcess,
    ContainerStats,
    PodEventFact,
    PodFacts,
    Target,
    TaskContainerFact,
    TaskFacts,
)
from prefect_cancel_doctor.model.vocabulary import (
    FINAL_STATES,
    RUN_ROLES,
    Absorber,
    AttachMode,
    CallKind,
    Delivered,
    FoundBy,
    HandlerKind,
    InfraKind,
    LabelValue,
    PodAttach,
    ResourceKind,
    Role,
    SampleFailure,
    StateType,
    StrEnum,
    TimelineSource,
    WorkerStatus,
)

__all__ = [
    "CONTAINER_NOT_FOUND",
    "DEFAULT_HEARTBEAT_SECONDS",
    "FINAL_STATES",
    "RUN_ROLES",
    "SCHEMA_VERSION",
    "TASK_GONE_STATUSES",
    "TRAITS",
    "Absorber",
    "AttachMode",
    "BlockingCall",
    "CallKind",
    "Cause",
    "CauseTraits",
    "CleanupClause",
    "ContainerEvent",
    "ContainerInfo",
    "ContainerProcess",
    "ContainerStats",
    "Delivered",
    "Delivery",
    "Diagnosis",
    "FlowRunRef",
    "FoundBy",
    "Frame",
    "HandlerKind",
    "InfraKind",
    "KernelThread",
    "LabelValue",
    "PodAttach",
    "PodEventFact",
    "PodFacts",
    "ProcSnapshot",
    "ProcessSample",
    "Published",
    "Report",
    "Resource",
    "ResourceKind",
    "Role",
    "SampleFailure",
    "SigtermHandler",
    "SocketPeer",
    "StateType",
    "StrEnum",
    "SwallowingExcept",
    "Target",
    "TaskContainerFact",
    "TaskFacts",
    "ThreadSample",
    "TimelineEntry",
    "TimelineSource",
    "Verdict",
    "WorkerInfo",
    "WorkerStatus",
    "heartbeat_due_seconds",
    "samples_in_place_of_stacks",
    "to_plain",
]
