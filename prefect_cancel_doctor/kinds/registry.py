"""Every kind of target, in the order their `infrastructure_pid` forms are tried.

The forms (docs/how-cancellation-works.md, section 4) do not overlap in this order: a bare PID or
"host:pid" (a host has no ``/`` or ``:``; a PID at most 7 digits) is a process; ``::`` an ECS task;
a URL or a hex id of 12–64 digits after the last ``:`` a Docker container; two or three parts
a Kubernetes Job; anything else is unknown.
"""

from __future__ import annotations

import dataclasses

from prefect_cancel_doctor.kinds.base import InfraRef, Kind
from prefect_cancel_doctor.kinds.docker.kind import DockerKind
from prefect_cancel_doctor.kinds.ecs.kind import EcsKind
from prefect_cancel_doctor.kinds.kubernetes.kind import KubernetesKind
from prefect_cancel_doctor.kinds.process.kind import NoInfrastructure, ProcessKind
from prefect_cancel_doctor.kinds.unreachable import UnknownKind
from prefect_cancel_doctor.model import InfraKind

KINDS: tuple[Kind, ...] = (
    NoInfrastructure(),
    ProcessKind(),
    EcsKind(),
    DockerKind(),
    KubernetesKind(),
    UnknownKind(),
)
_BY_INFRA = {kind.infra: kind for kind in KINDS}


def kind_of(infra: InfraKind) -> Kind:
    """The kind of target an `InfraKind` names."""
    return _BY_INFRA[infra]


def parse_infrastructure_pid(raw: str | None) -> InfraRef:
    """The first kind's reading of `raw` (`UnknownKind` reads anything)."""
    value = (raw or "").strip()
    for kind in KINDS:
        ref = kind.parse(value)
        if ref is not None:
            return dataclasses.replace(ref, raw=raw)
    raise AssertionError("UnknownKind parses anything")  # pragma: no cover
