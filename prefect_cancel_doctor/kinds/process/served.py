"""Runs of `flow.serve()`: found through their Runner, since their processes carry no run id.

A served run's flow process is a multiprocessing "spawn" child of the script that
called `flow.serve()` (Prefect 3.x's `run_flow_in_subprocess`): the run id reaches it
pickled, after it started, so `/proc/PID/environ` holds no `PREFECT__FLOW_RUN_ID`,
nor do the children it starts. The Runner records no `infrastructure_pid` either.
What the kernel does show:

- the Runner: a process whose working directory holds the deployment's entrypoint
  file (a served deployment's entrypoint is relative to where `serve()` ran) and
  that has spawn children;
- the flow process: one of those spawn children; of several, the one that started
  last before the run went Running (the child itself proposes Running);
- its children: its descendants, and, once it is gone, the processes that carry
  the Runner's `PREFECT__DEPLOYMENT_NAME` (the engine exports it before the flow
  runs), sit in the Runner's process group and started while the run ran. The
  serve Runner signals the flow process alone, not its group (3.9
  `runner/_process_manager.py`, `_SingleProcessTerminationScope`), so such
  children outlive a cancel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from prefect_cancel_doctor.clients.prefect_records import Deployment, FlowRun, parse_time
from prefect_cancel_doctor.kinds import Location
from prefect_cancel_doctor.model import FoundBy, InfraKind, Role
from prefect_cancel_doctor.proc import procfs

_SPAWN_CHILD = ("--multiprocessing-fork",)
_DEPLOYMENT_KEY = b"PREFECT__DEPLOYMENT_NAME="
#: A flow process starts a few seconds before its run goes Running (it imports Prefect first).
_START_SLACK = timedelta(seconds=120)


@dataclass(frozen=True)
class _Row:
    pid: int
    ppid: int
    pgid: int
    started: datetime
    argv: tuple[str, ...]
    deployment_name: str | None
    has_run_id: bool


class ServedRuns:
    """This host's processes, read once, for locating served runs (one instance per scan)."""

    def __init__(self, proc_root: str = "/proc") -> None:
        self.proc_root = proc_root
        self._rows: dict[int, _Row] | None = None

    @property
    def table(self) -> dict[int, _Row]:
        if self._rows is None:
            self._rows = _table(self.proc_root)
        return self._rows

    def present(self) -> bool:
        """Whether any process here could be a served run's (a gate before reading deployments)."""
        return any(
            _is_spawn(row) or (row.deployment_name and not row.has_run_id) for row in self.table.values()
        )

    @staticmethod
    def candidate(run: FlowRun) -> bool:
        """Whether `run` may be a served run: a deployment's run with no pool and no infrastructure_pid."""
        return bool(run.deployment_id) and not run.work_pool_name and not run.infrastructure_pid

    def locate(self, run: FlowRun, deployment: Deployment) -> Location | None:
        """The served run's processes on this host, or None when nothing here serves its deployment."""
        if not deployment.entrypoint or not self.candidate(run):
            return None
        table = self.table
        entry_file = deployment.entrypoint.rpartition(":")[0] or deployment.entrypoint
        runners = [row for row in table.values() if _serves(row, entry_file, table, self.proc_root)]
        if not runners:
            return None
        started = parse_time(run.start_time)
        ended = parse_time(run.end_time)
        engines = sorted(
            (row for row in table.values() if row.ppid in {r.pid for r in runners} and _is_spawn(row)),
            key=lambda row: row.started,
        )
        before = [row for row in engines if started is None or row.started <= started + timedelta(seconds=5)]
        engine = (
            before[-1]
            if before and (started is None or started - before[-1].started < _START_SLACK)
            else None
        )
        left = {r.pid: _survivors(r, deployment, started, ended, table) for r in runners}
        runner = next(
            (r for r in runners if r.pid == engine.ppid)
            if engine is not None
            else iter(sorted(runners, key=lambda r: len(left[r.pid]), reverse=True))
        )
        notes = [
            f"served run: found through its Runner {runner.pid} (`{' '.join(runner.argv)[:100]}`), whose "
            f"working directory holds the deployment's entrypoint {deployment.entrypoint}; a served flow "
            "process carries no PREFECT__FLOW_RUN_ID; its frames in `<dynamic-code>` are that script's "
            "code, which flow.serve() sends to the flow process pickled"
        ]
        if engine is not None and len(engines) > 1:
            notes.append(
                f"the Runner has {len(engines)} flow processes; {engine.pid} is the one started last before "
                "the run went Running"
            )
        pids: list[tuple[int, Role]] = []
        if engine is not None:
            pids.append((engine.pid, Role.ENGINE))
            pids += [(pid, Role.CHILD) for pid in _descendants(engine.pid, table)]
        else:
            pids += [(row.pid, Role.CHILD) for row in left[runner.pid]]
        description = (
            f"served flow process {engine.pid}"
            if engine is not None
            else f"{len(pids)} leftover process(es) of a served run"
            if pids
            else "no process of the run on this host"
        )
        return Location(
            InfraKind.PROCESS,
            description,
            tuple(pids),
            runner.pid,
            None,
            tuple(notes),
            found_by=FoundBy.SERVE,
        )


def _serves(row: _Row, entry_file: str, table: dict[int, _Row], proc_root: str) -> bool:
    if _is_spawn(row) or not any(child.ppid == row.pid for child in table.values()):
        return False
    try:
        cwd = os.readlink(f"{proc_root}/{row.pid}/cwd")
    except OSError:
        return False
    return (Path(cwd) / entry_file).is_file()


def _is_spawn(row: _Row) -> bool:
    return any(word in row.argv for word in _SPAWN_CHILD) and any("spawn_main" in w for w in row.argv)


def _descendants(pid: int, table: dict[int, _Row]) -> list[int]:
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = sorted(row.pid for row in table.values() if row.ppid == parent)
        found += children
        frontier += children
    return sorted(found)


def _survivors(
    runner: _Row,
    deployment: Deployment,
    started: datetime | None,
    ended: datetime | None,
    table: dict[int, _Row],
) -> list[_Row]:
    """Processes left by a served run whose flow process is gone."""
    if started is None:
        return []
    until = ended or datetime.max.replace(tzinfo=started.tzinfo)
    return [
        row
        for row in table.values()
        if row.deployment_name == deployment.name
        and not row.has_run_id
        and row.pgid == runner.pgid
        and started - timedelta(seconds=5) <= row.started <= until
        and not _is_spawn(row)
    ]


def _table(proc_root: str) -> dict[int, _Row]:
    boot = procfs.boot_time(proc_root)
    ticks = os.sysconf("SC_CLK_TCK")
    table: dict[int, _Row] = {}
    for pid in procfs.pids(proc_root):
        stat = procfs.read_stat_fields(pid, proc_root)
        if stat is None or boot is None:
            continue
        ppid, pgid, start_ticks = stat
        environ = procfs.read_environ(pid, proc_root) or b""
        table[pid] = _Row(
            pid=pid,
            ppid=ppid,
            pgid=pgid,
            started=boot + timedelta(seconds=start_ticks / ticks),
            argv=procfs.read_cmdline(Path(proc_root) / str(pid) / "cmdline"),
            deployment_name=procfs.env_value(environ, _DEPLOYMENT_KEY),
            has_run_id=procfs.FLOW_RUN_KEY in environ,
        )
    return table


__all__ = ["ServedRuns"]
