"""Stage the catalog's scenarios on a `LocalPrefect`: real runs, really stuck.

The order matters, because a healthy Runner escalates to SIGKILL 30 s after
its SIGTERM, and a live worker would finish most cancels:

1. Every run starts on a real process worker (the `observer` scenario on a
   second worker and pool) and waits, RUNNING, at its blocking line.
2. `child`: cancelled while the worker lives; the run ends Cancelled and the
   child it started in its own session survives.
3. The signal-resistant runs are cancelled; as soon as the worker's audit log
   shows the SIGTERM to each of their process groups, the worker is SIGKILLed
   ("the worker crashed mid-cancel"), long before its SIGKILL escalation.
4. With the worker dead: the `cancel_not_observed` runs are cancelled, `gone`
   loses its process and is cancelled, `orphan` is cancelled and then forced
   to Cancelled, `never_started` is claimed in the dead worker's name
   (Pending, its labels, Submitting) and cancelled.
5. `observer_dead`: the server is stopped until the second worker logs that
   its cancellation observer failed, started again on the same port and
   database, and once that worker heartbeats ONLINE again the run is cancelled.

Every step waits on a condition with a deadline, never on a fixed sleep.
"""

from __future__ import annotations

import contextlib
import datetime
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect_cancel_doctor.demo.catalog import (
    DEFAULT_DEMO_SCENARIOS,
    SCENARIO_DIR,
    Pool,
    Recipe,
    Scenario,
    marker_line,
    select,
)
from prefect_cancel_doctor.demo.harness import (
    CANCELLING_TIMEOUT_MESSAGE,
    OBSERVER_FAILED_LINE,
    WORKER_HEARTBEAT_SECONDS,
    HarnessError,
    LocalPrefect,
    StageClock,
    StagedEnvironment,
    WorkerProcess,
    pid_alive,
    process_environ,
)
from prefect_cancel_doctor.model import (
    CallKind,
    Cause,
    Delivered,
    ResourceKind,
    WorkerStatus,
    heartbeat_due_seconds,
)

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

MAIN_POOL = "pcd-demo"
OBSERVER_POOL = "pcd-demo-observer"
MAIN_WORKER = "pcd-demo-worker"
OBSERVER_WORKER = "pcd-demo-observer-worker"

#: The Runner's SIGKILL escalation after SIGTERM (hard-coded in Prefect 3.9).
RUNNER_KILL_GRACE_SECONDS = 30.0
#: Kill the worker no later than this after the first SIGTERM it sent.
_WORKER_KILL_BUDGET_SECONDS = 20.0


@dataclass(frozen=True)
class StuckRun:
    """One staged run: what was done, what the doctor should find."""

    #: Scenario name (key of `catalog.SCENARIOS`).
    scenario: str
    run_id: str
    run_name: str
    deployment_id: str
    pool_name: str
    #: The worker that ran (for `never_started`: claimed) it.
    worker_name: str | None
    #: That worker's PID (None for `never_started`, which no live worker touched).
    worker_pid: int | None
    api_url: str
    expected_cause: Cause
    expected_kind: CallKind | None
    #: The state type the run was left in ("CANCELLING" or "CANCELLED").
    expected_state: str
    #: The flow program actually deployed (a copy outside site-packages).
    file: Path
    #: The same program in the package.
    source_file: Path
    #: The program's line marked `# demo: blocks here`.
    line: int
    #: Where the doctor's blocking call should point: (filename, line), or None.
    expected_location: tuple[str, int] | None
    #: The flow (engine) process: `infrastructure_pid` (None if it never started).
    flow_pid: int | None
    #: Whether the flow process should still be running.
    process_alive: bool
    #: Processes of the run that outlived its flow process (the `child` scenario).
    survivor_pids: tuple[int, ...] = ()
    #: The file its `ready` handshake was written to.
    ready_path: Path | None = None
    #: The secondary finding the doctor should report (`Verdict.also`), if any.
    expected_also: Cause | None = None
    #: What the blocking call should be found waiting on (`BlockingCall.resource.kind`), if said.
    expected_resource: ResourceKind | None = None
    #: Whether the doctor should find that a SIGTERM came (`Delivery.sigterm`), if said.
    expected_delivery: Delivered | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain values (enums as strings, paths as str), e.g. for JSON."""
        return {
            "scenario": self.scenario,
            "run_id": self.run_id,
            "run_name": self.run_name,
            "deployment_id": self.deployment_id,
            "pool_name": self.pool_name,
            "worker_name": self.worker_name,
            "worker_pid": self.worker_pid,
            "api_url": self.api_url,
            "expected_cause": self.expected_cause.value,
            "expected_kind": self.expected_kind.value if self.expected_kind else None,
            "expected_also": self.expected_also.value if self.expected_also else None,
            "expected_resource": self.expected_resource.value if self.expected_resource else None,
            "expected_state": self.expected_state,
            "file": str(self.file),
            "source_file": str(self.source_file),
            "line": self.line,
            "expected_location": list(self.expected_location) if self.expected_location else None,
            "flow_pid": self.flow_pid,
            "process_alive": self.process_alive,
            "survivor_pids": list(self.survivor_pids),
            "expected_delivery": self.expected_delivery.value if self.expected_delivery else None,
        }


@dataclass
class DemoEnvironment(StagedEnvironment[StuckRun]):
    """A staged environment: the server, its workers, and the stuck runs."""

    harness: LocalPrefect
    runs: list[StuckRun]
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    #: Seconds spent in each stage, for the curious and for the timing report.
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Staged:
    scenario: Scenario
    deployment_id: str
    ready_path: Path
    run_id: str = ""
    flow_pid: int | None = None
    worker: WorkerProcess | None = None
    worker_name: str | None = None
    survivors: tuple[int, ...] = ()
    #: Runs created again because the first crashed at submission (a transient 503).
    resubmitted: int = 0


def stage_scenarios(
    harness: LocalPrefect,
    scenarios: Sequence[Scenario],
    log: Callable[[str], None] = lambda _message: None,
    ready_timeout: float = 240.0,
    wait_worker_offline: bool = True,
) -> DemoEnvironment:
    """Get one run per scenario stuck for real on `harness` (see the module docstring).

    With `wait_worker_offline`, it returns only once the API reports the killed
    worker OFFLINE (about 20 s after the kill), so the API tells the same story
    as the processes do.
    """
    stages = StageClock()
    timings, lap = stages.timings, stages.lap

    flows_dir = harness.workdir / "flows"
    ready_dir = harness.workdir / "ready"
    flows_dir.mkdir(exist_ok=True)
    ready_dir.mkdir(exist_ok=True)
    for scenario in scenarios:
        shutil.copy2(SCENARIO_DIR / scenario.file, flows_dir / scenario.file)

    by_recipe: dict[Recipe, list[_Staged]] = {recipe: [] for recipe in Recipe}
    pools = {Pool.MAIN: MAIN_POOL, Pool.OBSERVER: OBSERVER_POOL}
    staged: list[_Staged] = []
    for pool in sorted({scenario.pool for scenario in scenarios}, key=lambda p: p.value):
        harness.create_process_pool(pools[pool])
    for scenario in scenarios:
        deployment_id = harness.deploy(
            flow_name=scenario.flow_name,
            entrypoint=scenario.entrypoint,
            directory=flows_dir,
            pool=pools[scenario.pool],
        )
        item = _Staged(scenario, deployment_id, ready_dir / scenario.name)
        staged.append(item)
        by_recipe[scenario.recipe].append(item)
    log(f"deployed {len(staged)} flow(s) to {', '.join(sorted({pools[s.pool] for s in scenarios}))}")
    lap("deploy")

    # 1. Start every run that needs a process, then the workers.
    running = [item for item in staged if item.scenario.recipe is not Recipe.PENDING_THEN_CANCEL]
    for item in running:
        item.run_id = harness.create_run(item.deployment_id, {"ready_path": str(item.ready_path)})
    workers: dict[str, WorkerProcess] = {}
    main_runs = [item for item in running if item.scenario.pool is Pool.MAIN]
    observer_runs = [item for item in running if item.scenario.pool is Pool.OBSERVER]
    if main_runs:
        workers[MAIN_WORKER] = harness.start_worker(MAIN_POOL, MAIN_WORKER)
        for item in main_runs:
            item.worker = workers[MAIN_WORKER]
        log(f"waiting for {len(main_runs)} run(s) to start and reach their blocking line")
        _wait_running_and_ready(harness, main_runs, ready_timeout)
        log("all runs are RUNNING at their blocking line")
    if observer_runs:
        # Started once the main runs are up: a loaded SQLite server answers 503
        # now and then, and this worker retries only once (see below).
        workers[OBSERVER_WORKER] = harness.start_worker(
            OBSERVER_POOL,
            OBSERVER_WORKER,
            {
                # Fail fast while the server is down, so that the cancellation
                # observer gives up within ~30 s (3 polls 10 s apart), while the
                # worker's own loops, which back off 4 times, survive the outage.
                "PREFECT_CLIENT_MAX_RETRIES": "1",
                "PREFECT_WORKER_QUERY_SECONDS": "5",
            },
        )
        for item in observer_runs:
            item.worker = workers[OBSERVER_WORKER]
    lap("start_runs")

    main_worker = workers.get(MAIN_WORKER)

    # 2. `child`: cancel with the worker alive; the flow ends, its child does not.
    for item in by_recipe[Recipe.CANCELLED_WITH_LIVE_WORKER]:
        survivor_pid = int((item.ready_path.with_suffix(".child")).read_text())
        harness.cancel_run(item.run_id)
        harness.wait_for_state(item.run_id, ["CANCELLED"], timeout=120)
        flow_pid = _pid(item)
        harness.wait_until(partial(_pid_gone, flow_pid), 30, f"flow process {flow_pid} to exit")
        item.survivors = tuple(pid for pid in harness.run_processes(item.run_id) if pid == survivor_pid)
        if not item.survivors:
            raise harness.error(f"the child {survivor_pid} of run {item.run_id} did not survive the cancel")
        log(f"child: run Cancelled by the worker; its child {survivor_pid} still runs")
    lap("child")

    # 3. Signal-resistant runs: cancel, wait for the SIGTERMs, kill the worker.
    resistant = by_recipe[Recipe.WORKER_KILLED_AFTER_SIGTERM]
    if resistant:
        assert main_worker is not None
        for item in resistant:
            harness.cancel_run(item.run_id)
        log(f"cancelled {', '.join(i.scenario.name for i in resistant)}; waiting for the worker's SIGTERMs")

        def all_signalled() -> bool:
            return all(main_worker.sigterm_time(_pid(i)) is not None for i in resistant)

        harness.wait_until(all_signalled, _WORKER_KILL_BUDGET_SECONDS, "the worker to SIGTERM every run")
        first = min(main_worker.sigterm_time(_pid(i)) or 0.0 for i in resistant)
        harness.kill_worker(main_worker)
        since = time.time() - first
        escalated = any(sent.signal == signal.SIGKILL for sent in main_worker.signals_sent())
        if since >= RUNNER_KILL_GRACE_SECONDS or escalated:
            raise harness.error(f"the worker was killed {since:.1f} s after its first SIGTERM: too late")
        log(f"worker SIGKILLed {since:.1f} s after its SIGTERMs, before its 30 s SIGKILL escalation")
    lap("signal_group")

    if main_worker is not None and main_worker.alive():
        harness.kill_worker(main_worker)
        log("worker SIGKILLed (crashed)")

    # 4. Worker dead: nothing will act on these cancels.
    for item in by_recipe[Recipe.WORKER_DEAD_BEFORE_CANCEL]:
        harness.cancel_run(item.run_id)
    for item in by_recipe[Recipe.PROCESS_KILLED_THEN_CANCEL]:
        harness.kill_run_processes(item.run_id)
        harness.cancel_run(item.run_id)
    for item in by_recipe[Recipe.FORCED_CANCELLED]:
        harness.cancel_run(item.run_id)
        harness.wait_for_state(item.run_id, ["CANCELLING"], timeout=30)
        harness.force_state(item.run_id, "CANCELLED", CANCELLING_TIMEOUT_MESSAGE)
    for item in by_recipe[Recipe.PENDING_THEN_CANCEL]:
        item.run_id = harness.create_run(item.deployment_id, {"ready_path": str(item.ready_path)})
        harness.claim_run(item.run_id, MAIN_WORKER, MAIN_POOL)
        harness.cancel_run(item.run_id)
        item.worker_name = MAIN_WORKER
    lap("worker_dead_group")

    # 5. On the live second worker: a hanging on_cancellation hook, then the
    #    cancellation observer gives up.
    if observer_runs:
        _wait_running_and_ready(harness, observer_runs, ready_timeout)
    for item in by_recipe[Recipe.HOOK_HANGS]:
        harness.cancel_run(item.run_id)
        in_hook = item.ready_path.with_suffix(".hook")
        harness.wait_until(
            in_hook.exists, 60, f"the Runner to enter the on_cancellation hook of {item.run_id}"
        )
        flow_pid = _pid(item)
        harness.wait_until(partial(_pid_gone, flow_pid), 30, f"flow process {flow_pid} to exit")
        # The hook runs in a subprocess of the Runner that carries the run's id.
        item.survivors = tuple(harness.run_processes(item.run_id))
        log("hook: flow process gone; the worker hangs in its on_cancellation hook")
    lap("hook")
    for item in by_recipe[Recipe.OBSERVER_FAILED]:
        assert item.worker is not None
        _kill_observer(harness, item.worker, log)
        harness.cancel_run(item.run_id)
        log(f"observer_dead: cancelled run {item.run_id}; its worker is ONLINE but will not act")
    lap("observer_dead")

    if wait_worker_offline and main_worker is not None:
        worker = main_worker
        harness.wait_until(
            lambda: harness.worker_status(worker) == WorkerStatus.OFFLINE,
            120,
            f"the API to report {worker.name} OFFLINE",
        )
        log(f"the API reports the dead worker {worker.name} OFFLINE")
    lap("worker_offline")

    runs = [_stuck_run(harness, item, flows_dir) for item in staged]
    _verify(harness, runs)
    lap("verify")
    return DemoEnvironment(harness=harness, runs=runs, workers=workers, timings=timings)


@contextlib.contextmanager
def run_demo_environment(
    scenarios: list[str] | None = None,
    console_log: Callable[[str], None] = print,
    **harness_options: Any,
) -> Iterator[DemoEnvironment]:
    """A local Prefect server with real runs stuck in Cancelling; everything is killed on exit.

    `scenarios` names catalog entries (None: `DEFAULT_DEMO_SCENARIOS`); progress
    goes to `console_log`, one short line at a time. `harness_options` are passed
    to `LocalPrefect` (e.g. `keep_workdir=True`).
    """
    chosen = select(list(DEFAULT_DEMO_SCENARIOS) if scenarios is None else scenarios)
    started = time.monotonic()
    with LocalPrefect(log=console_log, **harness_options) as harness:
        environment = stage_scenarios(harness, chosen, console_log)
        console_log(f"{len(environment.runs)} stuck run(s) ready in {time.monotonic() - started:.0f} s")
        yield environment
        console_log("cleaning up: killing the server, the worker and every stuck process")


# -- steps -----------------------------------------------------------------


_SUBMIT_FAILED = "Failed to submit flow run to infrastructure"


def _wait_running_and_ready(harness: LocalPrefect, items: list[_Staged], timeout: float) -> None:
    pending = {item.run_id: item for item in items}
    last_states: dict[str, str] = {}

    def check() -> bool:
        runs = harness.read_runs(list(pending))
        for run_id, run in list(runs.items()):
            item = pending[run_id]
            state = run.state.type.value if run.state is not None else "NONE"
            last_states[run_id] = state
            if run.state is not None and run.state.is_final():
                name = item.scenario.name
                if _SUBMIT_FAILED in (run.state.message or "") and item.resubmitted < 2:
                    # A busy SQLite server answers 503 now and then; the observer pool's
                    # worker retries once only, so its run can crash at submission.
                    item.resubmitted += 1
                    del pending[run_id]
                    item.run_id = harness.create_run(item.deployment_id, {"ready_path": str(item.ready_path)})
                    pending[item.run_id] = item
                    continue
                raise harness.error(
                    f"run {run_id} ({name}) ended {state} before it got stuck: {run.state.message}"
                )
            if state == "RUNNING" and run.infrastructure_pid and item.ready_path.exists():
                item.flow_pid = int(str(run.infrastructure_pid).rpartition(":")[2])
                del pending[run_id]
        return not pending

    def describe() -> str:
        waiting = ", ".join(f"{i.scenario.name} ({last_states.get(r, '?')})" for r, i in pending.items())
        return f"runs to be RUNNING with their ready file: {waiting}"

    harness.wait_until(check, timeout, describe, interval=0.25)


def _kill_observer(harness: LocalPrefect, worker: WorkerProcess, log: Callable[[str], None]) -> None:
    """Stop the server until the worker's cancellation observer gives up, then bring it back."""
    log("observer_dead: stopping the server until the worker's cancellation observer gives up")
    harness.stop_server()
    took = harness.wait_for_log(worker, OBSERVER_FAILED_LINE, timeout=240)
    log(f"observer_dead: worker logged '{OBSERVER_FAILED_LINE}' {took:.0f} s after the server stopped")
    harness.start_server()
    back = datetime.datetime.now(datetime.timezone.utc)

    def fresh_heartbeat() -> bool:
        for known in harness.workers_of_pool(worker.pool):
            status = getattr(known.status, "value", known.status)
            heartbeat = known.last_heartbeat_time
            if known.name == worker.name and status == WorkerStatus.ONLINE and heartbeat and heartbeat > back:
                return True
        if not worker.alive():
            raise harness.error(f"worker {worker.name} died during the server outage")
        return False

    harness.wait_until(fresh_heartbeat, 120, f"worker {worker.name} to heartbeat ONLINE again", interval=0.5)
    log("observer_dead: server back; the worker heartbeats ONLINE again")


def _stuck_run(harness: LocalPrefect, item: _Staged, flows_dir: Path) -> StuckRun:
    scenario = item.scenario
    deployed = flows_dir / scenario.file
    line = marker_line(deployed)
    location: tuple[str, int] | None
    if scenario.survivor_location is not None:
        location = scenario.survivor_location
    elif scenario.expected_kind is not None:
        location = (str(deployed), line)
    else:
        location = None
    run = harness.read_run(item.run_id)
    expected_cause, expected_also, expected_delivery = (
        scenario.expected_cause,
        scenario.expected_also,
        scenario.expected_delivery,
    )
    if expected_delivery is Delivered.UNKNOWN and _heartbeats_show_dead_before_cancel(harness, item, run):
        # The kill and the cancel were further apart than usual (a loaded machine): the records
        # now prove that no SIGTERM was sent, so that comes first and the absorber second.
        expected_cause, expected_also, expected_delivery = (
            Cause.CANCEL_NOT_OBSERVED,
            scenario.expected_cause,
            Delivered.NO,
        )
    return StuckRun(
        scenario=scenario.name,
        run_id=item.run_id,
        run_name=run.name,
        deployment_id=item.deployment_id,
        pool_name=MAIN_POOL if scenario.pool is Pool.MAIN else OBSERVER_POOL,
        worker_name=item.worker.name if item.worker else item.worker_name,
        worker_pid=item.worker.pid if item.worker else None,
        api_url=harness.api_url,
        expected_cause=expected_cause,
        expected_kind=scenario.expected_kind,
        expected_state=scenario.expected_state,
        file=deployed,
        source_file=scenario.path,
        line=line,
        expected_location=location,
        flow_pid=item.flow_pid,
        process_alive=scenario.process_alive,
        survivor_pids=item.survivors,
        ready_path=item.ready_path,
        expected_also=expected_also,
        expected_resource=scenario.expected_resource,
        expected_delivery=expected_delivery,
    )


def _heartbeats_show_dead_before_cancel(harness: LocalPrefect, item: _Staged, run: FlowRun) -> bool:
    """Whether the API's records prove the run's worker stopped before its cancel: the worker's last
    heartbeat came longer before the run entered Cancelling than a live worker goes between two
    (Prefect jitters the interval up to 1.3 times, and the call itself takes time).

    A `WORKER_DEAD_BEFORE_CANCEL` run is cancelled right after its worker is killed, usually within
    the heartbeat that follows, and then no record can tell whether the worker saw the cancel. On a
    loaded machine the gap can exceed the interval; then the records do tell."""
    if item.worker is None or run.state is None or run.state.timestamp is None:
        return False
    known = next((w for w in harness.workers_of_pool(item.worker.pool) if w.name == item.worker.name), None)
    if known is None or known.last_heartbeat_time is None:
        return False
    gap: float = (run.state.timestamp - known.last_heartbeat_time).total_seconds()
    return gap > heartbeat_due_seconds(WORKER_HEARTBEAT_SECONDS)


def _verify(harness: LocalPrefect, runs: list[StuckRun]) -> None:
    """Check that every run is where its scenario says, so a broken stage fails loudly here."""
    states = harness.read_runs([run.run_id for run in runs])
    problems = []
    for run in runs:
        state = states[run.run_id].state
        state_type = state.type.value if state is not None else None
        if state_type != run.expected_state:
            problems.append(f"{run.scenario}: state {state_type}, expected {run.expected_state}")
        if run.flow_pid is not None:
            alive = pid_alive(run.flow_pid)
            if alive != run.process_alive:
                problems.append(f"{run.scenario}: flow process {run.flow_pid} alive={alive}")
            if alive and process_environ(run.flow_pid).get("PREFECT__FLOW_RUN_ID") != run.run_id:
                problems.append(f"{run.scenario}: process {run.flow_pid} does not carry the run's id")
    if problems:
        raise harness.error("staged runs are not as expected:\n  " + "\n  ".join(problems))


def _pid(item: _Staged) -> int:
    if item.flow_pid is None:
        raise HarnessError(f"run {item.run_id} ({item.scenario.name}) has no flow process")
    return item.flow_pid


def _pid_gone(pid: int) -> bool:
    return not pid_alive(pid)


__all__ = [
    "MAIN_POOL",
    "MAIN_WORKER",
    "OBSERVER_POOL",
    "OBSERVER_WORKER",
    "DemoEnvironment",
    "StuckRun",
    "run_demo_environment",
    "stage_scenarios",
]
