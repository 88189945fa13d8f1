"""What `watch` keeps from one refresh to the next, so that a refresh re-reads only what changed.

A full scan locates every run again: the runs' processes by walking every process's environment,
each process read with its sockets (the kernel's whole TCP table), the run's Runner, its state
history and the names of its flow and deployment. Between two refreshes a few seconds apart almost
none of it changes. `Memo` keeps a run's location and state history while:

- its record as the API gives it is the same (any new state, `infrastructure_pid` or pool makes
  it another record);
- each of its processes, and its Runner, is still the same process (same start time, not a
  zombie), and the run's own processes have the same children.

A run that fails either is located again, from a fresh walk of /proc; so are the runs of kinds
whose target is not just this host's processes (a container, a pod, a task), every refresh. The
names of flows and deployments are asked only for ids not seen yet. At least every `SWEEP`
seconds a refresh is a full scan, which finds what no kept run points to (a run that ended
elsewhere with processes left here). What is read about a run's present is read every refresh as
a scan does: its record, its processes' dump and /proc, its logs, its pool's workers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prefect_cancel_doctor.clients.prefect_records import FlowRun, State
from prefect_cancel_doctor.kinds.base import Location
from prefect_cancel_doctor.model import InfraKind, Role
from prefect_cancel_doctor.proc import procfs

#: Seconds after which a refresh locates every run again, as a full scan does.
SWEEP = 60.0

#: Kinds whose location is their processes on this host, re-read from its /proc.
_HOST_KINDS = (InfraKind.PROCESS, InfraKind.NONE)


@dataclass(frozen=True)
class _Process:
    pid: int
    start_ticks: int
    #: Its children when the run was located; None where they are not the run's (a Runner's).
    children: tuple[int, ...] | None


@dataclass(frozen=True)
class _Located:
    run: FlowRun
    location: Location
    history: tuple[State, ...]
    processes: tuple[_Process, ...]


@dataclass
class Memo:
    """The previous refresh's locations, state histories and names (see the module's docstring)."""

    names: dict[str, dict[str, str]] = field(default_factory=dict)
    _located: dict[str, _Located] = field(default_factory=dict)
    _index: dict[str, list[int]] | None = None
    _unreadable: list[int] = field(default_factory=list)
    _checked: set[str] = field(default_factory=set)
    _swept: float = 0.0
    _kept: set[str] = field(default_factory=set)

    def index(
        self, cancelling: list[FlowRun], cancelled: list[FlowRun], proc_root: str
    ) -> tuple[dict[str, list[int]], list[int]]:
        """This host's run processes (`procfs.flow_run_processes`) and the unreadable PIDs: the last
        walk's where every run located last time is kept and no recently cancelled run is new, else
        a new walk."""
        sweep = self._index is None or time.monotonic() - self._swept > SWEEP
        self._kept = set() if sweep else {r.id for r in [*cancelling, *cancelled] if self._same(r, proc_root)}
        due = (
            sweep
            or any(r.id not in self._kept for r in cancelling)
            # a run located last time that changed, or ended, or is an orphan in another final state
            or not set(self._located) <= self._kept
            or not {r.id for r in cancelled} <= self._checked | self._kept
        )
        if due or self._index is None:
            self._unreadable = []
            self._index = procfs.flow_run_processes(proc_root, self._unreadable)
            self._checked = {r.id for r in cancelled}
            # What the walk finds of a kept run must be what it was located with.
            self._kept = {i for i in self._kept if set(self._index.get(i, ())) == self._own(i)}
            if sweep:
                self._swept = time.monotonic()
        return self._index, self._unreadable

    def kept(self, run: FlowRun) -> tuple[Location, list[State]] | None:
        """The run's location and state history from the previous refresh, if they still hold."""
        if run.id not in self._kept:
            return None
        located = self._located[run.id]
        return located.location, list(located.history)

    def remember(
        self,
        runs: list[FlowRun],
        locations: list[Location],
        histories: dict[str, list[State]],
        proc_root: str,
    ) -> None:
        """This refresh's runs: what was kept stays, what was located is fingerprinted."""
        located: dict[str, _Located] = {}
        for run, location in zip(runs, locations, strict=True):
            if run.id in self._kept:
                located[run.id] = self._located[run.id]
                continue
            processes = _fingerprint(location, proc_root) if location.kind in _HOST_KINDS else None
            if processes is not None:
                located[run.id] = _Located(run, location, tuple(histories.get(run.id, ())), processes)
        self._located = located

    def _same(self, run: FlowRun, proc_root: str) -> bool:
        located = self._located.get(run.id)
        return (
            located is not None
            and located.run == run
            and _fingerprint(located.location, proc_root) == located.processes
        )

    def _own(self, run_id: str) -> set[int]:
        """The PIDs a walk of /proc finds for the run: its located processes but its Runners."""
        location = self._located[run_id].location
        return {pid for pid, role in location.pids if role is not Role.RUNNER}


def _fingerprint(location: Location, proc_root: str) -> tuple[_Process, ...] | None:
    """Each process of the location as it is now; None where one is gone already (locate it again)."""
    processes = []
    wanted = [*location.pids, *([(location.runner_pid, Role.RUNNER)] if location.runner_pid else [])]
    for pid, role in wanted:
        snapshot = procfs.read_process(pid, proc_root, read_sockets=False)
        if snapshot is None or snapshot.state == "Z":
            return None
        children = None if role is Role.RUNNER else snapshot.children
        processes.append(_Process(pid, snapshot.start_time_ticks, children))
    return tuple(processes)


__all__ = ["SWEEP", "Memo"]
