"""A real, throw-away Prefect installation: server, work pools, workers, runs.

`LocalPrefect` starts `prefect server start` on 127.0.0.1 with its own
`PREFECT_HOME` and SQLite database, and offers the handful of operations the
demo and the end-to-end tests need to get flow runs stuck for real: process
work pools, deployments of local flow files, `prefect worker start` processes
(each in its own session, logging to a file), runs, cancels exactly as
`prefect flow-run cancel` does, forced states, and server stop/restart.

Leaving the context manager (also on Ctrl-C, SIGTERM or an exception) kills
everything it started: workers, the server, every process whose environment
carries the `PREFECT__FLOW_RUN_ID` of a run it created (flow processes and
the children that outlived them), and deletes its temporary directory.

Workers get a tiny `sitecustomize` that records every `os.kill`/`os.killpg`
the worker makes (an audit hook; it changes nothing), so the harness knows
when the Runner has sent SIGTERM to a flow's process group instead of
guessing with a sleep.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import httpx

from prefect_cancel_doctor.demo import empty_database

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun, Worker

#: The message Prefect's server uses when its cancelling timeout marks a run Cancelled.
CANCELLING_TIMEOUT_MESSAGE = "Flow run cancellation timed out; marked this flow run as Cancelled."

#: What the Runner logs when its cancellation observer gives up for good.
OBSERVER_FAILED_LINE = "Cancellation observer failed"

#: How often the demo's workers heartbeat (Prefect's default is 30 s).
WORKER_HEARTBEAT_SECONDS = 5

_FLOW_RUN_ENV = b"PREFECT__FLOW_RUN_ID="
_AUDIT_LOG_ENV = "PCD_DEMO_KILL_AUDIT_LOG"
_PR_SET_PDEATHSIG = 1

# Installed (as sitecustomize.py) into a directory on the workers' PYTHONPATH.
# It removes itself from the environment so the flow processes the worker
# starts do not inherit it.
_SITECUSTOMIZE = '''\
"""prefect-cancel-doctor demo: log the signals this process sends (audit hook)."""
import os
import sys
import time

_path = os.environ.pop("{audit_env}", None)
_here = os.path.dirname(os.path.abspath(__file__))
_rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != _here]
if _rest:
    os.environ["PYTHONPATH"] = os.pathsep.join(_rest)
else:
    os.environ.pop("PYTHONPATH", None)

if _path:
    _fd = os.open(_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _pcd_audit(event, args):
        if event in ("os.kill", "os.killpg"):
            os.write(_fd, ("%.6f %s %d %d\\n" % (time.time(), event, args[0], args[1])).encode())

    sys.addaudithook(_pcd_audit)
'''


class HarnessError(RuntimeError):
    """Something the harness needed did not happen; the message carries log tails."""


@dataclass(frozen=True)
class SignalSent:
    """One `os.kill`/`os.killpg` call a worker made, from its audit log."""

    time: float
    #: "os.kill" or "os.killpg".
    call: str
    #: The PID (os.kill) or process group (os.killpg) signalled.
    target: int
    #: The signal number (0 is a liveness probe).
    signal: int


@dataclass
class SpawnedWorker:
    """A `prefect worker start` process started by a harness, with its log file."""

    name: str
    pool: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The worker's PID (also its process group and session id)."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the worker process is still running."""
        return self.popen.poll() is None

    def log_text(self) -> str:
        """The worker's log so far (its own output and its flow runs')."""
        return _read_text(self.log_path)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0, *, group: bool = True) -> None:
        """Send `sig` to the worker's process group (or, `group=False`, to the worker alone) and
        reap it; SIGKILL after `timeout` s."""
        if not self.alive():
            return
        send = os.killpg if group else os.kill
        with contextlib.suppress(ProcessLookupError):
            send(self.pid, sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                send(self.pid, signal.SIGKILL)
            self.popen.wait(timeout)


@dataclass
class WorkerProcess(SpawnedWorker):
    """A process worker whose every kill/killpg is audited (see `_SITECUSTOMIZE`)."""

    kill_log_path: Path = Path()
    started_at: float = field(default_factory=time.time)

    def signals_sent(self) -> list[SignalSent]:
        """Every kill/killpg the worker made so far."""
        sent = []
        for line in _read_text(self.kill_log_path).splitlines():
            parts = line.split()
            if len(parts) == 4:
                sent.append(SignalSent(float(parts[0]), parts[1], int(parts[2]), int(parts[3])))
        return sent

    def sigterm_time(self, pid: int) -> float | None:
        """When the worker sent SIGTERM to `pid` or to its process group (first time), if it did."""
        for sent in self.signals_sent():
            if sent.target == pid and sent.signal == signal.SIGTERM:
                return sent.time
        return None


class StageClock:
    """Seconds spent in each named stage of a staging, for the timing report."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._clock = time.monotonic()

    def lap(self, name: str) -> None:
        """Close the stage `name`: record the time since the previous lap."""
        now = time.monotonic()
        self.timings[name] = round(now - self._clock, 2)
        self._clock = now


class _HasScenario(Protocol):
    @property
    def scenario(self) -> str: ...


RunT = TypeVar("RunT", bound=_HasScenario)


class StagedEnvironment(Generic[RunT]):
    """What every staged demo environment offers: its server and its stuck runs by scenario."""

    harness: LocalPrefect
    runs: list[RunT]

    @property
    def api_url(self) -> str:
        """The local server's API URL."""
        return self.harness.api_url

    @property
    def env(self) -> dict[str, str]:
        """PREFECT_API_URL and friends, for a process that should talk to this server."""
        return self.harness.env

    def run(self, scenario: str) -> RunT:
        """The staged run of a scenario."""
        for run in self.runs:
            if run.scenario == scenario:
                return run
        raise KeyError(scenario)


class LocalPrefect:
    """A local Prefect server and workers for the demo and the end-to-end tests.

    Use as a context manager::

        with LocalPrefect(log=print) as prefect:
            prefect.create_process_pool("demo")
            ...

    `api_url` is the server's API; `env` holds the variables a child process
    (the doctor, a test) needs to talk to it; `child_env()` merges them into
    the current environment. With `ui=True` the server also serves Prefect's UI
    at `ui_url`, talking to `api_url` (the demo's `--keep`: someone browses it).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        workdir: str | Path | None = None,
        keep_workdir: bool = False,
        log: Callable[[str], None] | None = None,
        cancelling_timeout_seconds: float = 86400.0,
        startup_timeout: float = 180.0,
        server_env: Mapping[str, str] | None = None,
        ui: bool = False,
    ) -> None:
        self.port = port or free_port()
        self._server_env = dict(server_env or {})
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        #: Whether the server serves Prefect's UI (off by default: it is not needed to stage runs).
        self.ui = ui
        self._given_workdir = Path(workdir) if workdir is not None else None
        self._keep_workdir = keep_workdir
        self._log = log or (lambda _message: None)
        self._cancelling_timeout = cancelling_timeout_seconds
        self.startup_timeout = startup_timeout
        self.workdir = Path()
        self.home = Path()
        self.logs_dir = Path()
        self._audit_dir = Path()
        self._server: subprocess.Popen[bytes] | None = None
        self._server_starts = 0
        self.workers: list[WorkerProcess] = []
        self.run_ids: set[str] = set()
        self._client: SyncPrefectClient | None = None
        self._closed = False
        self._previous_sigterm: Any = None
        self._installed_sigterm = False

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> LocalPrefect:
        self._install_sigterm_handler()
        atexit.register(self.close)
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Create the work directory and start the server; returns once /api/health answers."""
        if self._given_workdir is not None:
            self.workdir = self._given_workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="pcd-demo-"))
        self.home = self.workdir / "prefect-home"
        self.logs_dir = self.workdir / "logs"
        self._audit_dir = self.workdir / "audit"
        for directory in (self.home, self.logs_dir, self._audit_dir):
            directory.mkdir(parents=True, exist_ok=True)
        (self._audit_dir / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(audit_env=_AUDIT_LOG_ENV))
        self.start_server()

    def close(self) -> None:
        """Kill everything this harness started and delete its work directory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        with _sigint_ignored():
            for step in (self._kill_workers, self._kill_run_processes, self._close_client, self._kill_server):
                try:
                    step()
                except Exception as exc:  # cleanup goes on whatever one step does
                    self._log(f"cleanup: {step.__name__} failed: {exc!r}")
            # Flow processes may still have been starting when the first sweep ran.
            with contextlib.suppress(Exception):
                self._kill_run_processes()
            self._remove_launch_traces()
            if not self._keep_workdir and self._given_workdir is None and self.workdir != Path():
                shutil.rmtree(self.workdir, ignore_errors=True)
        self._restore_sigterm_handler()

    def _remove_launch_traces(self) -> None:
        """Delete the workspace directories a killed worker left in /tmp for this harness's runs."""
        from prefect_cancel_doctor.kinds.process.locate import launch_traces

        for run_id, config in launch_traces().items():
            if run_id in self.run_ids:
                shutil.rmtree(Path(config).parent, ignore_errors=True)

    # -- environment ---------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """The variables a process needs to use this server (PREFECT_API_URL, PREFECT_HOME, ...)."""
        return {
            "PREFECT_API_URL": self.api_url,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # no first-run telemetry notice nor first-import event from the staged processes
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_COLORS": "false",
        }

    def child_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The current environment without its PREFECT_* settings, plus `env` and `extra`."""
        base = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
        base.pop(_AUDIT_LOG_ENV, None)
        return {**base, **self.env, **(extra or {})}

    # -- server --------------------------------------------------------------

    @property
    def ui_url(self) -> str | None:
        """Where Prefect's UI is served (a run's page is `<ui_url>/runs/flow-run/<id>`); None
        when the server runs without it."""
        return f"http://127.0.0.1:{self.port}" if self.ui else None

    def ui_served(self) -> bool:
        """Whether the server answers the UI's root with its HTML page (Prefect serves no UI it
        could not unpack, and says so only in its log)."""
        if self.ui_url is None:
            return False
        try:
            page = httpx.get(
                f"{self.ui_url}/", headers={"Accept": "text/html"}, follow_redirects=True, timeout=5
            )
        except httpx.HTTPError:
            return False
        return page.status_code == 200 and page.headers.get("content-type", "").startswith("text/html")

    @property
    def server_pid(self) -> int | None:
        """PID of the running server, if any."""
        return self._server.pid if self._server is not None and self._server.poll() is None else None

    @property
    def server_log_path(self) -> Path:
        """The server's log file (all starts append to it)."""
        return self.logs_dir / "server.log"

    def start_server(self) -> None:
        """Start `prefect server start` (same port, same database on a restart) and wait for health."""
        if self.server_pid is not None:
            raise HarnessError("the server is already running")
        self._server_starts += 1
        database = self.home / "prefect.db"
        # A new database: from the installation's migrated copy, else migrated here and kept as it.
        new_database = "PREFECT_API_DATABASE_CONNECTION_URL" not in self._server_env and not database.exists()
        migrates_here = new_database and not empty_database.start_from_template(database)
        env = self.child_env(
            {
                "PREFECT_SERVER_UI_ENABLED": str(self.ui).lower(),
                # The browser's UI calls this API (server.ui.api_url; Prefect would derive it from
                # PREFECT_API_URL, which child_env also sets: said here so that nothing else wins).
                "PREFECT_SERVER_UI_API_URL": self.api_url,
                **(_ui_static_directory() if self.ui else {}),
                "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{database}",
                "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_CANCELLING_TIMEOUT_SECONDS": str(
                    self._cancelling_timeout
                ),
                # Mark dead workers OFFLINE within ~20 s (3 missed 5 s heartbeats), not ~60 s.
                "PREFECT_SERVER_SERVICES_FOREMAN_LOOP_SECONDS": "5",
                **self._server_env,
            }
        )
        command = [
            *prefect_command(),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--ui" if self.ui else "--no-ui",
            "--analytics-off",
        ]
        with self.server_log_path.open("ab") as log_file:
            log_file.write(f"\n==== server start #{self._server_starts} ====\n".encode())
            log_file.flush()
            self._server = _spawn(command, env, log_file, self.workdir)
        self._log(f"server: starting on {self.api_url} (pid {self._server.pid})")
        self.wait_healthy(self.startup_timeout)
        if migrates_here:
            empty_database.keep_as_template(database)
        self._close_client()

    def wait_healthy(self, timeout: float) -> float:
        """Poll /api/health until it answers 200; returns the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        with httpx.Client(timeout=2.0) as http:
            while True:
                if self._server is not None and self._server.poll() is not None:
                    raise self.error(
                        f"the server exited with status {self._server.returncode} while starting"
                    )
                try:
                    if http.get(f"{self.api_url}/health").status_code == 200:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise self.error(
                        f"the server did not answer {self.api_url}/health within {timeout:.0f} s"
                    )
                time.sleep(0.2)

    def stop_server(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `timeout`); the database stays."""
        server = self._server
        if server is None or server.poll() is not None:
            return
        self._close_client()
        _terminate_group(server, timeout)
        self._log(f"server: stopped (pid {server.pid})")

    def restart_server(self) -> None:
        """Stop the server and start it again on the same port with the same database."""
        self.stop_server()
        self.start_server()

    def _kill_server(self) -> None:
        if self._server is not None and self._server.poll() is None:
            _terminate_group(self._server, 5.0)

    # -- API -----------------------------------------------------------------

    @property
    def client(self) -> SyncPrefectClient:
        """A Prefect client for this server (re-created after a server restart)."""
        if self._client is None:
            from prefect.client.orchestration import SyncPrefectClient

            client = SyncPrefectClient(self.api_url, api_key=None, auth_string=None)
            client.__enter__()
            self._client = client
        return self._client

    def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.__exit__(None, None, None)

    def create_process_pool(self, name: str) -> None:
        """Create a process work pool with Prefect's default job template (no-op if it exists)."""
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.exceptions import ObjectAlreadyExists
        from prefect.workers.process import ProcessWorker

        template = ProcessWorker.get_default_base_job_template()
        with contextlib.suppress(ObjectAlreadyExists):
            self.client.create_work_pool(
                WorkPoolCreate(name=name, type="process", base_job_template=template)
            )

    def deploy(
        self,
        *,
        flow_name: str,
        entrypoint: str,
        directory: Path,
        pool: str,
        name: str = "demo",
        pull_steps_before: Sequence[Mapping[str, Any]] = (),
    ) -> str:
        """Register a deployment of `entrypoint` (relative to `directory`) on `pool`; returns its id.

        This is what `flow.from_source(directory, entrypoint).deploy(...)` registers for a
        local directory: a `set_working_directory` pull step, and no image.
        `pull_steps_before` run first (a `run_shell_script` step, say).
        """
        flow_id = self.client.create_flow_from_name(flow_name)
        deployment_id = self.client.create_deployment(
            flow_id=flow_id,
            name=name,
            work_pool_name=pool,
            entrypoint=entrypoint,
            path=str(directory),
            pull_steps=[
                *(dict(step) for step in pull_steps_before),
                {"prefect.deployments.steps.set_working_directory": {"directory": str(directory)}},
            ],
            enforce_parameter_schema=False,
        )
        return str(deployment_id)

    def create_run(self, deployment_id: str, parameters: Mapping[str, Any]) -> str:
        """Create a flow run of a deployment (Scheduled, due now); returns its id."""
        run = self.client.create_flow_run_from_deployment(
            uuid.UUID(deployment_id), parameters=dict(parameters)
        )
        self.run_ids.add(str(run.id))
        return str(run.id)

    def wait_for_run_log(self, run_id: str, needles: tuple[str, ...], timeout: float = 30) -> None:
        """Wait until the run's logs in the API hold a line with one of `needles` (a flow's logger
        ships its lines in batches, seconds after they are written)."""
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        wanted = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(run_id)]))

        def seen() -> bool:
            return any(n in log.message for log in self.client.read_logs(log_filter=wanted) for n in needles)

        self.wait_until(seen, timeout, f"run {run_id} to log one of {needles}")

    def read_run(self, run_id: str) -> FlowRun:
        """The flow run as the API reports it now."""
        return self.client.read_flow_run(uuid.UUID(run_id))

    def read_runs(self, run_ids: Iterable[str]) -> dict[str, FlowRun]:
        """Several flow runs in one request, by id."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        ids = [uuid.UUID(run_id) for run_id in run_ids]
        if not ids:
            return {}
        runs = self.client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        return {str(run.id): run for run in runs}

    def state_type(self, run_id: str) -> str | None:
        """The run's state type ("RUNNING", "CANCELLING", ...)."""
        state = self.read_run(run_id).state
        return state.type.value if state is not None else None

    def cancel_run(self, run_id: str) -> str:
        """Cancel a run exactly as `prefect flow-run cancel` does; returns the resulting state type.

        The CLI proposes a bare CANCELLING state (not forced) and fails only on ABORT.
        """
        from prefect.client.schemas.objects import State, StateType
        from prefect.client.schemas.responses import SetStateStatus

        result = self.client.set_flow_run_state(uuid.UUID(run_id), State(type=StateType.CANCELLING))
        if result.status == SetStateStatus.ABORT:
            reason = getattr(result.details, "reason", None)
            raise HarnessError(f"flow run {run_id} could not be cancelled: {reason}")
        return result.state.type.value if result.state is not None else "UNKNOWN"

    def propose_pending(self, run_id: str) -> None:
        """Propose Pending, as a worker does when it claims a run (`_propose_pending_state`)."""
        from prefect.client.schemas.responses import OrchestrationResult, SetStateStatus
        from prefect.states import Pending

        result: OrchestrationResult[Any] = self.client.set_flow_run_state(uuid.UUID(run_id), Pending())
        if result.status != SetStateStatus.ACCEPT:
            raise HarnessError(f"Pending was not accepted for flow run {run_id}: {result.status}")

    def claim_run(self, run_id: str, worker_name: str, pool: str) -> None:
        """Do what a process worker does to a run before it starts any infrastructure.

        Pending, the worker's labels, then Submitting (workers/base.py `_submit_run`,
        `_give_worker_labels_to_flow_run`, `_propose_submitting_state`).
        """
        from prefect.client.schemas.responses import OrchestrationResult, SetStateStatus

        self.propose_pending(run_id)
        work_pool = self.client.read_work_pool(pool)
        labels: dict[str, bool | int | float | str] = {
            "prefect.worker.name": worker_name,
            "prefect.worker.type": "process",
            "prefect.work-pool.name": work_pool.name,
            "prefect.work-pool.id": str(work_pool.id),
        }
        self.client.update_flow_run_labels(uuid.UUID(run_id), labels)
        try:
            from prefect.states import Submitting
        except ImportError:  # older Prefect: workers propose no Submitting state
            return
        result: OrchestrationResult[Any] = self.client.set_flow_run_state(uuid.UUID(run_id), Submitting())
        if result.status != SetStateStatus.ACCEPT:
            raise HarnessError(f"Submitting was not accepted for flow run {run_id}: {result.status}")

    def force_state(self, run_id: str, state_type: str, message: str | None = None) -> None:
        """Force a state, disregarding orchestration rules (as the server's cancelling timeout does)."""
        from prefect.client.schemas.objects import State, StateType

        kind = StateType(state_type)
        self.client.set_flow_run_state(uuid.UUID(run_id), State(type=kind, message=message), force=True)

    def wait_for_state(self, run_id: str, state_types: Iterable[str], timeout: float) -> str:
        """Poll until the run's state type is one of `state_types`; returns it."""
        wanted = set(state_types)
        seen = None

        def done() -> bool:
            nonlocal seen
            seen = self.state_type(run_id)
            return seen in wanted

        self.wait_until(done, timeout, lambda: f"flow run {run_id} to reach {sorted(wanted)} (last: {seen})")
        assert seen is not None
        return seen

    def workers_of_pool(self, pool: str) -> list[Worker]:
        """The workers the API knows for a pool, with status and last heartbeat."""
        return self.client.read_workers_for_work_pool(pool)

    def worker_status(self, worker: WorkerProcess) -> str | None:
        """The API's status of a worker ("ONLINE", "OFFLINE"), None if unknown."""
        for known in self.workers_of_pool(worker.pool):
            if known.name == worker.name:
                return str(getattr(known.status, "value", known.status))
        return None

    # -- workers -------------------------------------------------------------

    def start_worker(self, pool: str, name: str, extra_env: Mapping[str, str] | None = None) -> WorkerProcess:
        """Start `prefect worker start --pool POOL --type process` in its own session.

        Its output (including its flow runs' output) goes to `logs/worker-NAME.log`;
        the signals it sends go to `logs/worker-NAME.kills`.
        """
        log_path = self.logs_dir / f"worker-{name}.log"
        kill_log_path = self.logs_dir / f"worker-{name}.kills"
        kill_log_path.touch()
        pythonpath = os.pathsep.join(p for p in (str(self._audit_dir), os.environ.get("PYTHONPATH", "")) if p)
        env = self.child_env(
            {
                "PREFECT_WORKER_QUERY_SECONDS": "2",
                "PREFECT_WORKER_HEARTBEAT_SECONDS": str(WORKER_HEARTBEAT_SECONDS),
                # Never switch to `uv run` because some pyproject.toml declares prefect.
                "PREFECT_RUNNER_AUTO_INSTALL_DEPENDENCIES": "false",
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": pythonpath,
                _AUDIT_LOG_ENV: str(kill_log_path),
                **(extra_env or {}),
            }
        )
        command = [*prefect_command(), "worker", "start", "--pool", pool, "--type", "process", "--name", name]
        with log_path.open("ab") as log_file:
            popen = _spawn(command, env, log_file, self.workdir)
        worker = WorkerProcess(
            name=name, pool=pool, popen=popen, log_path=log_path, kill_log_path=kill_log_path
        )
        self.workers.append(worker)
        self._log(f"worker {name}: started on pool {pool} (pid {worker.pid})")
        return worker

    def kill_worker(self, worker: WorkerProcess, sig: int = signal.SIGKILL, timeout: float = 15.0) -> None:
        """Signal the worker process alone (SIGKILL by default: a crash) and reap it.

        Only its PID, as a crash or the OOM killer would: before Prefect 3.9 the flow
        processes share the worker's process group, and must outlive it as they do then.
        """
        worker.stop(sig, timeout, group=False)
        self._log(f"worker {worker.name}: killed (pid {worker.pid})")

    def _kill_workers(self) -> None:
        for worker in self.workers:
            if worker.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.popen.wait(10)

    # -- processes -----------------------------------------------------------

    def run_processes(self, run_id: str) -> list[int]:
        """PIDs of live processes whose environment carries PREFECT__FLOW_RUN_ID=run_id."""
        return sorted(processes_by_flow_run({run_id}).get(run_id, ()))

    def kill_run_processes(self, run_id: str, timeout: float = 15.0) -> None:
        """SIGKILL every process of a run (and their process groups) and wait until they are gone."""
        self._kill_pids(self.run_processes(run_id))
        self.wait_until(
            lambda: not self.run_processes(run_id), timeout, f"the processes of run {run_id} to die"
        )

    def _kill_run_processes(self) -> None:
        if not self.run_ids:
            return
        for _ in range(3):
            pids = [pid for pids in processes_by_flow_run(self.run_ids).values() for pid in pids]
            if not pids:
                return
            self._kill_pids(pids)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
                time.sleep(0.05)

    @staticmethod
    def _kill_pids(pids: Iterable[int]) -> None:
        own_group = os.getpgrp()
        for pid in pids:
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == pid and pid != own_group:
                    os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    # -- waiting and errors --------------------------------------------------

    def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float,
        what: str | Callable[[], str],
        interval: float = 0.2,
    ) -> float:
        """Poll `predicate` until true; raise HarnessError (with log tails) after `timeout` s."""
        started = time.monotonic()
        while not predicate():
            if time.monotonic() - started > timeout:
                description = what() if callable(what) else what
                raise self.error(f"timed out after {timeout:.0f} s waiting for {description}")
            time.sleep(interval)
        return time.monotonic() - started

    def wait_for_log(self, worker: WorkerProcess, text: str, timeout: float) -> float:
        """Wait until the worker's log contains `text`; fails early if the worker exits."""

        def found() -> bool:
            if text in worker.log_text():
                return True
            if not worker.alive():
                raise self.error(f"worker {worker.name} exited while waiting for {text!r} in its log")
            return False

        return self.wait_until(found, timeout, f"{text!r} in the log of worker {worker.name}", interval=0.25)

    def error(self, message: str) -> HarnessError:
        """A HarnessError whose message ends with the tails of the server and worker logs."""
        parts = [message]
        logs = [("server", self.server_log_path)] + [(f"worker {w.name}", w.log_path) for w in self.workers]
        for label, path in logs:
            tail = _tail(path, 40)
            if tail:
                parts.append(f"---- last lines of the {label} log ({path}) ----\n{tail}")
        return HarnessError("\n".join(parts))

    # -- signals -------------------------------------------------------------

    def _install_sigterm_handler(self) -> None:
        # A SIGTERM to the harness (a CI timeout, `kill`) should clean up like Ctrl-C does.
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def interrupt(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        self._previous_sigterm = signal.signal(signal.SIGTERM, interrupt)
        self._installed_sigterm = True

    def _restore_sigterm_handler(self) -> None:
        if self._installed_sigterm and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._installed_sigterm = False


# -- helpers ---------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ui_static_directory() -> dict[str, str]:
    """Where the server unpacks its UI (once per Prefect version): Prefect's own place, beside its
    package, where it can write there; else a cache directory of the user's."""
    spec = importlib.util.find_spec("prefect")
    if (
        spec is not None
        and spec.origin is not None
        and os.access(Path(spec.origin).parent / "server", os.W_OK)
    ):
        return {}
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return {"PREFECT_SERVER_UI_STATIC_DIRECTORY": str(cache / "prefect-cancel-doctor" / "prefect-ui")}


def prefect_command() -> list[str]:
    """How to run the `prefect` CLI of this interpreter's environment."""
    script = Path(sys.executable).parent / "prefect"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "prefect"]


def processes_by_flow_run(run_ids: Iterable[str]) -> dict[str, list[int]]:
    """Live PIDs whose /proc/PID/environ has PREFECT__FLOW_RUN_ID set to one of `run_ids`."""
    wanted = {run_id.encode(): run_id for run_id in run_ids}
    found: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        for variable in environ.split(b"\0"):
            if variable.startswith(_FLOW_RUN_ENV):
                run_id = wanted.get(variable[len(_FLOW_RUN_ENV) :])
                if run_id is not None and pid_alive(int(entry)):
                    found.setdefault(run_id, []).append(int(entry))
                break
    return found


def process_environ(pid: int) -> dict[str, str]:
    """The environment of a process, from /proc (empty if unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _spawn(command: list[str], env: Mapping[str, str], log_file: Any, cwd: Path) -> subprocess.Popen[bytes]:
    """Start a long-lived helper in its own session, output to `log_file`.

    On Linux, when spawned from the main thread, the helper is also told to die
    with the harness (PR_SET_PDEATHSIG), so a SIGKILLed test run leaks no
    server or worker.
    """
    preexec = _die_with_parent if threading.current_thread() is threading.main_thread() else None
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env=dict(env),
        cwd=str(cwd),
        start_new_session=True,
        preexec_fn=preexec,  # only prctl(2): no locks, safe after fork
    )


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _terminate_group(popen: subprocess.Popen[bytes], timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGTERM)
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(timeout)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int) -> str:
    return "\n".join(_read_text(path).splitlines()[-lines:])


__all__ = [
    "CANCELLING_TIMEOUT_MESSAGE",
    "OBSERVER_FAILED_LINE",
    "HarnessError",
    "LocalPrefect",
    "SignalSent",
    "WorkerProcess",
    "free_port",
    "pid_alive",
    "prefect_command",
    "process_environ",
    "processes_by_flow_run",
]
