"""The process kind: a run that is processes of this host (a process worker's or a Runner's, or a
served flow's), found by `PREFECT__FLOW_RUN_ID` whatever its `infrastructure_pid` says."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

from prefect_cancel_doctor.kinds.base import Here, InfraRef, Location, ProcessesOnly
from prefect_cancel_doctor.kinds.process.locate import launch_traces, local_workers, locate_processes
from prefect_cancel_doctor.kinds.process.served import ServedRuns
from prefect_cancel_doctor.model import InfraKind

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_records import FlowRun

#: A PID as Linux writes it: ASCII digits, at most 7 of them (pid_max is at most 2^22).
_PID = re.compile(r"[0-9]{1,7}")


class ProcessKind(ProcessesOnly):
    """``"3055"`` (older Runners: ``"hostname:3055"``); also a run with no `infrastructure_pid`."""

    infra = InfraKind.PROCESS
    concurrent = False

    def parse(self, value: str) -> InfraRef | None:
        if _PID.fullmatch(value):
            return InfraRef(InfraKind.PROCESS, value, pid=int(value))
        head, _, tail = value.rpartition(":")
        if _PID.fullmatch(tail) and head and "/" not in head and ":" not in head:
            return InfraRef(InfraKind.PROCESS, value, pid=int(tail), host=head)
        return None

    def describe(self, ref: InfraRef, started: bool) -> str:
        return f"process {ref.pid} on host {ref.host}" if ref.host else f"process {ref.pid}"

    def prepare(self, runs: list[FlowRun], here: Here) -> set[str]:
        """The deployments of the runs that may be served here (read by the engine beforehand)."""
        wanted = {r.deployment_id for r in runs if ServedRuns.candidate(r) and r.deployment_id}
        return wanted if wanted and _served(here).present() else set()

    def may_still_run(self, run: FlowRun, here: Here) -> bool:
        """A final-state run no process here carries the id of: a served run's may still run."""
        return ServedRuns.candidate(run) and _served(here).present()

    def locate(self, run: FlowRun, ref: InfraRef, here: Here) -> Location:
        proc_root = here.options.proc_root
        workers = here.shared(
            "process.workers", lambda: functools.cache(lambda pool: local_workers(pool, proc_root))
        )
        traces = here.shared("process.traces", lambda: functools.cache(launch_traces))
        location = locate_processes(run.id, ref, here.index, proc_root, run.work_pool_name, workers, traces)
        if location.pids or not ServedRuns.candidate(run) or not _served(here).present():
            return location
        deployment = here.deployments.get(run.deployment_id) if run.deployment_id else None
        served = _served(here).locate(run, deployment) if deployment else None
        return served or location


class NoInfrastructure(ProcessKind):
    """No `infrastructure_pid` recorded: never started, or started without a worker (a flow called
    directly, a served run); its processes, if any, are found by their run id like a process run's."""

    infra = InfraKind.NONE

    def parse(self, value: str) -> InfraRef | None:
        return InfraRef(InfraKind.NONE, value) if not value else None

    def describe(self, ref: InfraRef, started: bool) -> str:
        return "started, no infrastructure_pid recorded" if started else "no infrastructure (never started)"


def _served(here: Here) -> ServedRuns:
    return here.shared("process.served", lambda: ServedRuns(here.options.proc_root))
