"""What no kind claims: any `infrastructure_pid` no worker of ours writes (ECS tasks are
`kinds.ecs`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect_cancel_doctor.kinds.base import Here, InfraRef, Location, ProcessesOnly
from prefect_cancel_doctor.model import InfraKind

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_records import FlowRun


class UnknownKind(ProcessesOnly):
    """Whatever no other kind claims (the registry's last)."""

    infra = InfraKind.UNKNOWN

    def parse(self, value: str) -> InfraRef | None:
        return InfraRef(InfraKind.UNKNOWN, value)

    def describe(self, ref: InfraRef, started: bool) -> str:
        return f"infrastructure_pid {ref.raw!r}"

    def locate(self, run: FlowRun, ref: InfraRef, here: Here) -> Location:
        return Location(ref.kind, ref.raw or "?", unreachable=f"unrecognised infrastructure_pid {ref.raw!r}")
