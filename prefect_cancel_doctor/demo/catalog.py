"""The catalog of demo scenarios: which flow, how it gets stuck, what the doctor should say.

This module imports neither Prefect nor anything heavy, so the CLI and the
unit tests can list scenarios cheaply. The flow programs live in
`scenarios/`; `harness.py` and `environment.py` make them stuck for real.

The expected cause follows one rule: it names what would stop the process
from ending on SIGTERM; where nothing would, the cause is that no SIGTERM
came (`cancel_not_observed`). Where the process shows that none came (its
interpreter holds no pending SIGTERM; its main thread still waits in the flow in
a call a signal interrupts), that comes first and what would stop it is the
secondary finding (`expected_also`): `database_worker_dead`, `thread_worker_dead`,
`to_thread`.
One exception, on request: `async_loop` expects `event_loop_blocked`, although
a real SIGTERM ends that flow (see its entry).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from prefect_cancel_doctor.model import Absorber, CallKind, Cause, Delivered, ResourceKind

#: Directory holding the `stuck_*.py` flow programs.
SCENARIO_DIR = Path(__file__).parent / "scenarios"

#: The comment that marks each program's blocking line.
BLOCK_MARKER = "# demo: blocks here"


class Recipe(str, enum.Enum):
    """How the harness gets a run stuck (see `environment.stage_scenarios`)."""

    #: The run's worker is SIGKILLed, then the run is cancelled: nothing acts.
    WORKER_DEAD_BEFORE_CANCEL = "worker_dead_before_cancel"
    #: The run is cancelled, the worker sends SIGTERM, and the worker is
    #: SIGKILLed before its 30 s SIGKILL escalation.
    WORKER_KILLED_AFTER_SIGTERM = "worker_killed_after_sigterm"
    #: The run is cancelled with a live worker; its run ends Cancelled.
    CANCELLED_WITH_LIVE_WORKER = "cancelled_with_live_worker"
    #: Worker dead, the flow process SIGKILLed, then the run is cancelled.
    PROCESS_KILLED_THEN_CANCEL = "process_killed_then_cancel"
    #: Worker dead, the run cancelled, then forced to Cancelled via the API.
    FORCED_CANCELLED = "forced_cancelled"
    #: The run is claimed via the API as a worker does (Pending, labels, Submitting), then cancelled.
    PENDING_THEN_CANCEL = "pending_then_cancel"
    #: The run is cancelled with a live worker (which stays up); the flow ends
    #: and the Runner hangs in its on_cancellation hook.
    HOOK_HANGS = "hook_hangs"
    #: The worker's cancellation observer gives up during a server outage; the
    #: server comes back, the worker is ONLINE again, then the run is cancelled.
    OBSERVER_FAILED = "observer_failed"


class Pool(str, enum.Enum):
    """Which work pool (and worker) a scenario runs on."""

    #: The main pool, whose worker the harness kills.
    MAIN = "main"
    #: A second pool whose worker stays up (its cancellation observer dies in
    #: `observer_dead`; it runs the hanging hook of `hook`).
    OBSERVER = "observer"


@dataclass(frozen=True)
class Scenario:
    """One way for a flow run to get stuck in Cancelling (or to look finished while it is not)."""

    #: Short name used on the command line and in the fixtures.
    name: str
    #: File name of the flow program inside `SCENARIO_DIR`.
    file: str
    #: Name of the `@flow` function in that file.
    flow_function: str
    #: The verdict cause the doctor should report.
    expected_cause: Cause
    #: The blocking call's kind the doctor should report (None: no blocking call).
    expected_kind: CallKind | None
    #: How the harness makes the run stuck.
    recipe: Recipe
    #: One line for humans.
    description: str
    #: The Prefect state type the run should be left in.
    expected_state: str = "CANCELLING"
    #: Whether the flow process should still run once the scenario is staged.
    process_alive: bool = True
    #: Which pool/worker the run uses.
    pool: Pool = Pool.MAIN
    #: For `child`: the expected (file, line) of the surviving child's frame.
    survivor_location: tuple[str, int] | None = None
    #: The secondary finding (`Verdict.also`) the doctor should report, if any.
    expected_also: Cause | None = None
    #: What the kernel should say the blocking call waits on (`BlockingCall.resource.kind`).
    expected_resource: ResourceKind | None = None
    #: Whether a SIGTERM came (`Verdict.delivery.sigterm`) and where it went, where the scenario
    #: stages a signal that was absorbed (None: not asserted).
    expected_delivery: Delivered | None = None
    expected_absorbed: Absorber | None = None

    @property
    def path(self) -> Path:
        """The flow program in the package (the harness deploys a copy)."""
        return SCENARIO_DIR / self.file

    @property
    def entrypoint(self) -> str:
        """Prefect entrypoint, relative to the directory the flow is deployed from."""
        return f"{self.file}:{self.flow_function}"

    @property
    def flow_name(self) -> str:
        """The `@flow(name=...)` of the program."""
        return "stuck-" + self.name.replace("_", "-")

    @property
    def blocking_line(self) -> int:
        """Line number of the marked blocking line, read from the file."""
        return marker_line(self.path)


def marker_line(path: Path) -> int:
    """Line number (1-based) of the line ending with `BLOCK_MARKER` in `path`."""
    for number, text in enumerate(path.read_text().splitlines(), 1):
        if text.rstrip().endswith(BLOCK_MARKER):
            return number
    raise ValueError(f"{path} has no line ending with {BLOCK_MARKER!r}")


def _scenario(
    name: str,
    cause: Cause,
    kind: CallKind | None,
    recipe: Recipe,
    description: str,
    *,
    expected_state: str = "CANCELLING",
    process_alive: bool = True,
    pool: Pool = Pool.MAIN,
    survivor_location: tuple[str, int] | None = None,
    also: Cause | None = None,
    resource: ResourceKind | None = None,
    delivery: Delivered | None = None,
    absorbed: Absorber | None = None,
) -> Scenario:
    return Scenario(
        name=name,
        file=f"stuck_{name}.py",
        flow_function=f"{name}_flow",
        expected_cause=cause,
        expected_kind=kind,
        recipe=recipe,
        description=description,
        expected_state=expected_state,
        process_alive=process_alive,
        pool=pool,
        survivor_location=survivor_location,
        expected_also=also,
        expected_resource=resource,
        expected_delivery=delivery,
        expected_absorbed=absorbed,
    )


_ALL = (
    _scenario(
        "sleep",
        Cause.CANCEL_NOT_OBSERVED,
        CallKind.SLEEP,
        Recipe.WORKER_DEAD_BEFORE_CANCEL,
        "time.sleep in the flow; its worker died before the cancel",
    ),
    _scenario(
        "network",
        Cause.CANCEL_NOT_OBSERVED,
        CallKind.NETWORK_IO,
        Recipe.WORKER_DEAD_BEFORE_CANCEL,
        "socket.recv without timeout on a silent local server; its worker died before the cancel",
    ),
    _scenario(
        "database",
        Cause.SIGNAL_PENDING,
        CallKind.DATABASE,
        Recipe.WORKER_KILLED_AFTER_SIGTERM,
        "sqlite3 write waiting on an exclusive lock inside C; SIGTERM stays pending",
    ),
    _scenario(
        "database_worker_dead",
        Cause.CANCEL_NOT_OBSERVED,
        CallKind.DATABASE,
        Recipe.WORKER_DEAD_BEFORE_CANCEL,
        "the same sqlite3 write inside C, but its worker died before the cancel: no SIGTERM was sent",
        also=Cause.SIGNAL_PENDING,
    ),
    _scenario(
        "subprocess",
        Cause.CANCEL_NOT_OBSERVED,
        CallKind.SUBPROCESS,
        Recipe.WORKER_DEAD_BEFORE_CANCEL,
        "subprocess.run(['sleep', '3600']); its worker died before the cancel",
    ),
    _scenario(
        "fifo",
        Cause.CANCEL_NOT_OBSERVED,
        CallKind.FILE_IO,
        Recipe.WORKER_DEAD_BEFORE_CANCEL,
        "open() of a FIFO no process writes to; its worker died before the cancel",
        resource=ResourceKind.FIFO,
    ),
    _scenario(
        "pipe",
        Cause.CANCEL_NOT_OBSERVED,
        CallKind.FILE_IO,
        Recipe.WORKER_DEAD_BEFORE_CANCEL,
        "reading the stdout of a child that sleeps; its worker died before the cancel",
        resource=ResourceKind.PIPE,
    ),
    _scenario(
        "lock",
        Cause.CANCEL_NOT_OBSERVED,
        CallKind.LOCK,
        Recipe.WORKER_DEAD_BEFORE_CANCEL,
        "a threading.Lock acquired twice; its worker died before the cancel",
    ),
    _scenario(
        "cpu",
        Cause.SIGNAL_PENDING,
        CallKind.CPU,
        Recipe.WORKER_KILLED_AFTER_SIGTERM,
        "hashlib.pbkdf2_hmac running for days inside C; SIGTERM stays pending",
    ),
    _scenario(
        "ignored",
        Cause.SIGNAL_IGNORED,
        CallKind.SLEEP,
        Recipe.WORKER_KILLED_AFTER_SIGTERM,
        "the flow set SIGTERM to SIG_IGN, then sleeps; the worker's SIGTERM did nothing",
    ),
    # Its worker died just before the cancel: within one heartbeat the doctor cannot tell whether
    # it saw the cancel, so it leads with what would absorb a SIGTERM (the handler). Staging that
    # took longer than a heartbeat proves no SIGTERM came (environment._stuck_run says so).
    _scenario(
        "swallowed",
        Cause.SIGNAL_IGNORED,
        CallKind.SLEEP,
        Recipe.WORKER_DEAD_BEFORE_CANCEL,
        "the flow's own SIGTERM handler returns without ending it; its worker died before the cancel",
        delivery=Delivered.UNKNOWN,
    ),
    _scenario(
        "handler_logs",
        Cause.SIGNAL_IGNORED,
        CallKind.SLEEP,
        Recipe.WORKER_KILLED_AFTER_SIGTERM,
        "the flow's own SIGTERM handler logs and returns; the worker's SIGTERM came and was absorbed",
        delivery=Delivered.YES,
        absorbed=Absorber.HANDLER_RETURNS,
    ),
    _scenario(
        "except_loop",
        Cause.SIGNAL_IGNORED,
        CallKind.SLEEP,
        Recipe.WORKER_KILLED_AFTER_SIGTERM,
        "`except BaseException` around each item of a loop catches TerminationSignal, logs it, goes on",
        delivery=Delivered.YES,
        absorbed=Absorber.EXCEPTION_SWALLOWED,
    ),
    _scenario(
        "bare_except",
        Cause.SIGNAL_IGNORED,
        CallKind.SLEEP,
        Recipe.WORKER_KILLED_AFTER_SIGTERM,
        "a bare `except:` in a retry loop catches TerminationSignal silently and tries again",
    ),
    _scenario(
        "gil_held",
        Cause.SIGNAL_PENDING,
        CallKind.SLEEP,
        Recipe.WORKER_KILLED_AFTER_SIGTERM,
        "a thread-pool task holds the GIL in C; the SIGTERM came but Prefect's handler cannot run",
        delivery=Delivered.YES,
        absorbed=Absorber.GIL_HELD,
    ),
    _scenario(
        "thread",
        Cause.EXIT_BLOCKED_BY_THREAD,
        CallKind.SLEEP,
        Recipe.WORKER_KILLED_AFTER_SIGTERM,
        "a thread-pool task sleeps; after SIGTERM the engine waits for that thread forever",
    ),
    _scenario(
        "thread_worker_dead",
        Cause.CANCEL_NOT_OBSERVED,
        CallKind.LOCK,
        Recipe.WORKER_DEAD_BEFORE_CANCEL,
        "the same flow waiting on its thread-pool task, but its worker died before the cancel: "
        "no SIGTERM was sent",
        also=Cause.EXIT_BLOCKED_BY_THREAD,
    ),
    _scenario(
        "to_thread",
        Cause.CANCEL_NOT_OBSERVED,
        CallKind.SLEEP,
        Recipe.WORKER_DEAD_BEFORE_CANCEL,
        "an async flow awaits asyncio.to_thread(fetch), which sleeps; its worker died before the cancel",
        also=Cause.EXIT_BLOCKED_BY_THREAD,
    ),
    _scenario(
        "to_thread_signalled",
        Cause.EXIT_BLOCKED_BY_THREAD,
        CallKind.SLEEP,
        Recipe.WORKER_KILLED_AFTER_SIGTERM,
        "the same async flow got SIGTERM: it unwound, and asyncio.run waits for the sleeping thread",
        delivery=Delivered.YES,  # Prefect 3.9's engine logged "Flow run was cancelled."
    ),
    # A real SIGTERM does end this flow in Prefect 3.9: the event loop runs in
    # the main thread, and `time.sleep` there is interrupted and raises. So it
    # is staged with its worker dead before the cancel; the expected cause is
    # the one the doctor is asked to report for an async flow whose loop is
    # blocked (see the module docstring's rule for the alternative).
    _scenario(
        "async_loop",
        Cause.EVENT_LOOP_BLOCKED,
        CallKind.SLEEP,
        Recipe.WORKER_DEAD_BEFORE_CANCEL,
        "an async flow calls time.sleep on its event loop; its worker died before the cancel",
    ),
    _scenario(
        "child",
        Cause.CHILD_PROCESS_SURVIVES,
        CallKind.SLEEP,
        Recipe.CANCELLED_WITH_LIVE_WORKER,
        "the flow started a child in its own session; the run is Cancelled, the child still runs",
        expected_state="CANCELLED",
        process_alive=False,
        survivor_location=("<string>", 1),
    ),
    _scenario(
        "gone",
        Cause.INFRASTRUCTURE_GONE,
        None,
        Recipe.PROCESS_KILLED_THEN_CANCEL,
        "the flow process was SIGKILLed after its worker died; only the Cancelling state is left",
        process_alive=False,
    ),
    _scenario(
        "orphan",
        Cause.ORPHANED_INFRASTRUCTURE,
        CallKind.SLEEP,
        Recipe.FORCED_CANCELLED,
        "the run was forced to Cancelled (as the server's timeout does) while its process sleeps on",
        expected_state="CANCELLED",
    ),
    _scenario(
        "never_started",
        Cause.NEVER_STARTED,
        None,
        Recipe.PENDING_THEN_CANCEL,
        "a worker claimed the run (Pending) and died before starting it; then it was cancelled",
        process_alive=False,
    ),
    _scenario(
        "hook",
        Cause.CANCELLATION_HOOK_HANG,
        CallKind.SLEEP,
        Recipe.HOOK_HANGS,
        "the flow ended on SIGTERM but the worker hangs in its on_cancellation hook",
        process_alive=False,
        pool=Pool.OBSERVER,
    ),
    _scenario(
        "observer_dead",
        Cause.CANCEL_NOT_OBSERVED,
        CallKind.SLEEP,
        Recipe.OBSERVER_FAILED,
        "the worker is ONLINE, but its cancellation observer gave up during a server outage",
        pool=Pool.OBSERVER,
    ),
)

#: Every scenario, by name, in a stable order.
SCENARIOS: dict[str, Scenario] = {scenario.name: scenario for scenario in _ALL}

#: The demo's default selection: one instructive run per common cause, and
#: quick to stage (no server outage, no CPU burner).
DEFAULT_DEMO_SCENARIOS: tuple[str, ...] = (
    "sleep",
    "database",
    "ignored",
    "thread",
    "child",
    "gone",
    "orphan",
    "never_started",
)


def select(names: list[str] | tuple[str, ...] | None) -> list[Scenario]:
    """The scenarios named (all of them for None), in catalog order; unknown names raise."""
    if names is None:
        return list(SCENARIOS.values())
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise KeyError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    wanted = set(names)
    return [scenario for scenario in SCENARIOS.values() if scenario.name in wanted]


__all__ = [
    "BLOCK_MARKER",
    "DEFAULT_DEMO_SCENARIOS",
    "SCENARIOS",
    "SCENARIO_DIR",
    "Pool",
    "Recipe",
    "Scenario",
    "marker_line",
    "select",
]
