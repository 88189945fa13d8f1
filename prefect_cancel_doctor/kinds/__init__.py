"""Where a run lives: one package per kind of target behind one interface (`base.Kind`), and the
registry the engine, the rules and `resolve` reach them through (`registry.KINDS`).

Forms of `infrastructure_pid` written by Prefect's workers (docs/how-cancellation-works.md,
section 4), each read by its kind:

- process worker / runner: ``"3055"`` (older: ``"hostname:3055"``)
- Docker worker: ``"<docker base url>:<container id>"`` (split on the last ``:``)
- Kubernetes worker: ``"<namespace>:<job name>"`` (before 3.4.1 ``"<cluster uid>:<ns>:<job>"``)
- ECS worker: ``"<cluster>::<task arn>"``
"""

from __future__ import annotations

from prefect_cancel_doctor.kinds.base import InfraRef, Location
from prefect_cancel_doctor.model import (  # re-exported: the report model holds them
    CONTAINER_NOT_FOUND,
    ContainerInfo,
    ContainerProcess,
    ContainerStats,
)


def parse_infrastructure_pid(raw: str | None) -> InfraRef:
    """The `InfraRef` of `raw`, as the first kind that recognises it reads it (`registry`)."""
    from prefect_cancel_doctor.kinds.registry import parse_infrastructure_pid as parse

    return parse(raw)


__all__ = [
    "CONTAINER_NOT_FOUND",
    "ContainerInfo",
    "ContainerProcess",
    "ContainerStats",
    "InfraRef",
    "Location",
    "parse_infrastructure_pid",
]
