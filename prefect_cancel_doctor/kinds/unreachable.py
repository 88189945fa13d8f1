"""Kinds the doctor recognises but cannot reach from a host: an ECS task (its own kind is issue
24's), and any `infrastructure_pid` no worker of ours writes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect_cancel_doctor.kinds.base import Here, InfraRef, Location, ProcessesOnly
from prefect_cancel_doctor.model import InfraKind

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_records import FlowRun


class EcsKind(ProcessesOnly):
    """``"<cluster>::<task arn>"`` (prefect-aws's ECS worker)."""

    infra = InfraKind.ECS

    def parse(self, value: str) -> InfraRef | None:
        if "::" not in value:
            return None
        cluster, _, task = value.partition("::")
        return InfraRef(InfraKind.ECS, value, namespace=cluster, job=task)

    def describe(self, ref: InfraRef, started: bool) -> str:
        return f"ECS task {ref.job}"

    def locate(self, run: FlowRun, ref: InfraRef, here: Here) -> Location:
        why = f"the run is ECS task {ref.job}: enable ECS Exec and run the doctor inside the task"
        return Location(ref.kind, ref.raw or "?", unreachable=why)


class UnknownKind(ProcessesOnly):
    """Whatever no other kind claims (the registry's last)."""

    infra = InfraKind.UNKNOWN

    def parse(self, value: str) -> InfraRef | None:
        return InfraRef(InfraKind.UNKNOWN, value)

    def describe(self, ref: InfraRef, started: bool) -> str:
        return f"infrastructure_pid {ref.raw!r}"

    def locate(self, run: FlowRun, ref: InfraRef, here: Here) -> Location:
        return Location(ref.kind, ref.raw or "?", unreachable=f"unrecognised infrastructure_pid {ref.raw!r}")
