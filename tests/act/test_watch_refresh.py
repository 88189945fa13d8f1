"""`watch`'s refreshes on real stuck runs: what did not change is not located again, and the verdicts are
a full scan's.

GIVEN two runs stuck for real on a local server (an environment of this module's own: a test kills a
run's processes), WHEN `watch` refreshes (`act.watch.refresher`, `watch`'s options; every run in
Cancelling, or one named), THEN a later refresh locates no unchanged run again (no locator call, no walk
of /proc, no state history read), a run given a new state is located again, and a run whose processes
exited is located again on the next refresh and seen gone, as a full scan sees it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from prefect_cancel_doctor.act.watch import refresher
from prefect_cancel_doctor.kinds.process.kind import ProcessKind
from prefect_cancel_doctor.model import Cause, Report
from prefect_cancel_doctor.proc import procfs
from prefect_cancel_doctor.scan.engine import Options, scan

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi
    from prefect_cancel_doctor.demo.environment import DemoEnvironment

pytestmark = pytest.mark.server

SCENARIOS = ["sleep", "swallowed"]
#: `watch`'s options (cli/act.py): one plain dump a process.
OPTIONS = Options(samples=1, interval=0.0, native=False, timeout=10.0)


@pytest.fixture(scope="module")
def environment() -> Iterator[DemoEnvironment]:
    from prefect_cancel_doctor.demo.environment import run_demo_environment

    def progress(message: str) -> None:
        sys.__stderr__.write(f"[watch {time.strftime('%H:%M:%S')}] {message}\n")

    with run_demo_environment(SCENARIOS, progress) as staged:
        yield staged


@pytest.fixture
def api(environment: DemoEnvironment) -> Iterator[PrefectApi]:
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi
    from prefect_cancel_doctor.clients.settings import resolve_connection

    with PrefectApi(resolve_connection(environment.harness.api_url)) as client:
        yield client


class Counted:
    """Calls of the process kind's locator (by run id), walks of /proc and API requests, per refresh."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, api: PrefectApi) -> None:
        self.api, self.walks, self.requests = api, 0, 0
        self.located: list[str] = []
        locate, walk = ProcessKind.locate, procfs.flow_run_processes

        def counting_locate(kind: ProcessKind, run: Any, *args: Any) -> Any:
            self.located.append(run.id)
            return locate(kind, run, *args)

        def counting_walk(*args: Any, **kwargs: Any) -> dict[str, list[int]]:
            self.walks += 1
            return walk(*args, **kwargs)

        monkeypatch.setattr(ProcessKind, "locate", counting_locate)
        monkeypatch.setattr(procfs, "flow_run_processes", counting_walk)

    def refresh(self, refresh: Any) -> Report:
        self.located, self.walks, sent = [], 0, self.api.requests
        report: Report = refresh()
        self.requests = self.api.requests - sent
        return report


def verdicts(report: Report) -> dict[str, tuple[str, int | None, tuple[int, ...]]]:
    """Run id → its cause, its engine's PID and the PIDs sampled."""
    return {
        d.flow_run.id: (
            d.verdict.cause.value,
            d.target.pid if d.target else None,
            tuple(p.pid for p in d.target.processes) if d.target else (),
        )
        for d in report.runs
        if d.flow_run is not None
    }


def test_a_later_refresh_locates_no_unchanged_run_and_gives_a_full_scans_verdicts(
    environment: DemoEnvironment, api: PrefectApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = {run.run_id for run in environment.runs}
    counted = Counted(monkeypatch, api)
    refresh = refresher(api, OPTIONS, [])
    first = counted.refresh(refresh)
    assert set(counted.located) == ids and counted.walks == 1
    first_requests = counted.requests
    for _ in range(2):
        later = counted.refresh(refresh)
        assert counted.located == [] and counted.walks == 0
        # no state history and no names: the listing, the recently cancelled, the pool's workers, the logs
        assert counted.requests < first_requests, (counted.requests, first_requests)
        assert verdicts(later) == verdicts(scan(api, OPTIONS))
    assert ids <= set(verdicts(later)) and verdicts(later) == verdicts(first)
    named = environment.run("swallowed").run_id
    refresh_named = refresher(api, OPTIONS, [named])  # `watch RUN`
    counted.refresh(refresh_named)
    assert counted.located == [named] and counted.walks == 1
    for _ in range(2):
        seen = counted.refresh(refresh_named)
        assert counted.located == [] and counted.walks == 0
        assert verdicts(seen) == {named: verdicts(scan(api, OPTIONS))[named]}
    changed = environment.run("sleep")
    environment.harness.force_state(changed.run_id, "CANCELLING", "cancelled again")  # a new state
    again = counted.refresh(refresh)
    assert counted.located == [changed.run_id] and counted.walks == 1  # only the run whose record changed
    assert verdicts(again) == verdicts(scan(api, OPTIONS))


def test_a_run_whose_processes_exit_is_located_again_and_seen_gone_on_the_next_refresh(
    environment: DemoEnvironment, api: PrefectApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = Counted(monkeypatch, api)
    refresh = refresher(api, OPTIONS, [])
    before = verdicts(counted.refresh(refresh))
    counted.refresh(refresh)
    assert counted.located == []
    ended, kept = environment.run("swallowed"), environment.run("sleep")
    pids = environment.harness.run_processes(ended.run_id)
    assert pids and before[ended.run_id][1] in pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(procfs.read_state(pid) not in (None, "Z") for pid in pids):
        assert time.monotonic() < deadline, "the killed processes did not exit"
        time.sleep(0.1)
    after = verdicts(counted.refresh(refresh))
    assert counted.located == [ended.run_id] and counted.walks == 1  # only the run that changed
    cause, engine, sampled = after[ended.run_id]
    assert engine is None and not set(sampled) & set(pids)
    assert cause == Cause.INFRASTRUCTURE_GONE.value != before[ended.run_id][0]
    assert after == verdicts(scan(api, OPTIONS))  # as a full scan sees it
    assert after[kept.run_id] == before[kept.run_id]
