"""Real flow runs stuck in Cancelling inside Docker containers, started by a real prefect-docker worker.

No registry is needed. `build_image` `docker import`s a tiny root filesystem
(the merged-/usr symlinks ``bin -> usr/bin`` ..., a minimal /etc) and every
container bind-mounts, read-only and at the same paths, the host's /usr, this
interpreter's Python installation (`sys.base_prefix`), its virtualenv
(`sys.prefix`), /etc/ld.so.cache and the scenario directory. Containers use
the host network, so they reach a Prefect server listening on 127.0.0.1.

`docker_demo_environment()` brings up a local Prefect server (`LocalPrefect`,
or one you pass in), a Docker work pool, a real ``prefect worker start --type
docker`` and one run per scenario of `DOCKER_SCENARIOS`; waits for each flow
to write its ready file (right before its ``# demo: blocks here`` line); then
gets each run stuck as its recipe says, and checks the result. Leaving the
context (also on Ctrl-C or SIGTERM) kills the worker, the server and every
container and sidecar it created, and deletes the image.

What was seen on Docker 20.10 with prefect 3.9.1 and prefect-docker 0.7.4
(2 cores): the image imports in < 0.1 s; `python -c 'import prefect'` in a
container takes ~1-2 s; a run is picked up, started and at its blocking line
~10-20 s after it is created; `infrastructure_pid` reads
``http+docker://localhost:<64-hex container id>``; containers carry the labels
``io.prefect.flow-run-id``, ``io.prefect.flow-run-name``, ``io.prefect.flow-id``,
``io.prefect.flow-name``, ``io.prefect.deployment-id``/``-name``/``-updated``,
``io.prefect.work-pool-id``/``-name``, ``io.prefect.worker-name`` and
``io.prefect.version``, and the environment variables ``PREFECT__FLOW_RUN_ID``,
``PREFECT__FLOW_ID``, ``PREFECT__FLOW_NAME``, ``PREFECT__DEPLOYMENT_ID``/``_NAME``,
``PREFECT__WORKER_NAME`` and the worker's own ``PREFECT_HOME``.

What a cancel does, by job command (seen on that setup):

- default command (the Runner is PID 1, the engine its child, NSpid 6 or 7):
  a flow in ``time.sleep`` ends Cancelled within ~4 s; a flow stuck in C
  (SQLite busy wait) keeps SIGTERM pending, the Runner SIGKILLs the engine
  30 s later and the run is Cancelled at ~32 s, container exit 0. Only a
  Runner that cannot act (here: frozen with SIGSTOP) leaves it Cancelling.
- ``python -m prefect.engine`` (engine is PID 1, no Runner): nothing happens;
  the run stays Cancelling.
- ``sh -c '...; ...'`` (dash is PID 1, SigCgt 0x10002): same, and `docker
  stop -t 20` waits the full 20 s, then SIGKILL, exit 137, run still Cancelling.
- the container SIGKILLed or deleted while Cancelling: the worker logs its exit
  (status 'exited' / 'removing'), its Crashed proposal is rejected, the run
  stays Cancelling.
- the server's cancelling timeout (tried at 15 s) marks the runs Cancelled,
  then the worker `docker stop`s the containers one at a time with a 30 s
  grace: a frozen Runner or a shell as PID 1 ends with exit 137 after 30 s
  each (orphans meanwhile); an engine as PID 1 handles SIGTERM, exits 0 and
  turns the Cancelled run into CRASHED ("Execution was aborted by a
  termination signal.").
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect_cancel_doctor.clients.docker_api import ContainerNotFound, DockerClient, DockerError
from prefect_cancel_doctor.demo.catalog import BLOCK_MARKER, marker_line
from prefect_cancel_doctor.demo.harness import (
    CANCELLING_TIMEOUT_MESSAGE,
    HarnessError,
    LocalPrefect,
    SpawnedWorker,
    StageClock,
    StagedEnvironment,
    prefect_command,
)
from prefect_cancel_doctor.kinds.docker.sidecar import remove_sidecars
from prefect_cancel_doctor.model import Absorber, CallKind, Cause, Delivered, Role
from prefect_cancel_doctor.proc.roles import argv_role

#: Directory holding the `stuck_docker_*.py` flow programs.
DOCKER_SCENARIO_DIR = Path(__file__).parent / "docker_scenarios"
#: Repository of the images `build_image` imports (the tag is per session).
IMAGE_REPOSITORY = "pcd-docker-demo"
#: Label on every image and container of a session: "<harness pid>-<random>".
OWNER_LABEL = "io.prefect-cancel-doctor.demo-owner"
#: Label naming a container's scenario.
SCENARIO_LABEL = "io.prefect-cancel-doctor.demo-scenario"
#: Work pool and worker names.
DOCKER_POOL = "pcd-docker"
DOCKER_WORKER = "pcd-docker-worker"
#: What the flows that absorb a SIGTERM log once they have (the harness waits for that line to reach
#: the API, so that the scan finds the run's own account of the signal).
ABSORBED_LOG_WORDS = ("received SIGTERM", "TerminationSignal")
#: The Runner SIGKILLs the engine this long after its SIGTERM (hard-coded in Prefect).
RUNNER_KILL_GRACE_SECONDS = 30.0

_PR_SET_PDEATHSIG = 1
_MERGED_USR = ("bin", "lib", "lib64", "sbin")
_ETC = {
    "etc/passwd": (
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    ),
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
}


# -- the catalog -------------------------------------------------------------------------


class DockerRecipe(str, enum.Enum):
    """How the harness gets a containerised run stuck."""

    #: Default command (Runner as PID 1). Cancel; once the engine has the SIGTERM
    #: (wakeup-fd handshake), freeze the Runner with SIGSTOP so it never SIGKILLs.
    RUNNER_FROZEN_AFTER_SIGTERM = "runner_frozen_after_sigterm"
    #: The engine is PID 1, no Runner: cancel, and nothing acts on it.
    CANCEL_UNOBSERVED = "cancel_unobserved"
    #: Cancel, then send the container's stop signal to its PID 1 (what `docker
    #: stop` does first): a shell drops it, a flow's own handler or `except` absorbs
    #: it (the harness waits for the scenario's `<ready_path>.sigterm` witness).
    STOP_SIGNAL_SENT = "stop_signal_sent"
    #: No Runner: cancel, then SIGKILL the container (exit 137).
    KILLED_WHILE_CANCELLING = "killed_while_cancelling"
    #: No Runner: cancel, then delete the container.
    REMOVED_WHILE_CANCELLING = "removed_while_cancelling"
    #: No Runner: cancel, then force CANCELLED through the API (as the server's timeout does).
    FORCED_CANCELLED = "forced_cancelled"


#: The job `command` that runs the engine without a Runner.
ENGINE_COMMAND = "python -m prefect.engine"
#: The job `command` that puts a shell in front of it as PID 1.
SHELL_COMMAND = "sh -c 'python -m prefect.engine; echo done'"


@dataclass(frozen=True)
class DockerScenario:
    """One way for a containerised run to get stuck (or to look finished while it is not)."""

    #: Short name, used in fixtures and on the command line.
    name: str
    #: File name of the flow program in `DOCKER_SCENARIO_DIR`.
    file: str
    #: Name of the `@flow` function in that file.
    flow_function: str
    #: `@flow(name=...)` in that file.
    flow_name: str
    #: The verdict cause the doctor should report.
    expected_cause: Cause
    #: The blocking call's kind the doctor should report (None: no blocking call).
    expected_kind: CallKind | None
    #: How the harness gets it stuck.
    recipe: DockerRecipe
    #: One line for humans.
    description: str
    #: The job variable `command` (None: prefect-docker's default, `prefect flow-run execute`).
    command: str | None = None
    #: The Prefect state type the run is left in.
    expected_state: str = "CANCELLING"
    #: "running", "exited" or "removed" once staged.
    container_state: str = "running"
    #: What PID 1 of the container is: "runner", "engine" or "pid1" (something else: a shell).
    pid1_role: str = "runner"
    #: Whether the flow writes `<ready_path>.sigterm` once it has absorbed the SIGTERM.
    witnesses_sigterm: bool = False
    #: Whether a SIGTERM came (`Verdict.delivery.sigterm`) and where it went (None: not asserted).
    expected_delivery: Delivered | None = None
    expected_absorbed: Absorber | None = None

    @property
    def path(self) -> Path:
        """The flow program in the package (the harness deploys a copy)."""
        return DOCKER_SCENARIO_DIR / self.file

    @property
    def entrypoint(self) -> str:
        """Prefect entrypoint, relative to the directory the flow is deployed from."""
        return f"{self.file}:{self.flow_function}"

    @property
    def blocking_line(self) -> int:
        """Line number of the line marked `# demo: blocks here`."""
        return marker_line(self.path)


_CATALOG = (
    DockerScenario(
        name="docker_signal_pending",
        file="stuck_docker_busy_db.py",
        flow_function="busy_db_flow",
        flow_name="stuck-docker-busy-db",
        expected_cause=Cause.SIGNAL_PENDING,
        expected_kind=CallKind.DATABASE,
        recipe=DockerRecipe.RUNNER_FROZEN_AFTER_SIGTERM,
        description=(
            "default command (Runner is PID 1); a SQLite busy wait in C keeps the Runner's SIGTERM "
            "pending, and the Runner is frozen before its 30 s SIGKILL"
        ),
    ),
    DockerScenario(
        name="docker_no_runner",
        file="stuck_docker_no_runner.py",
        flow_function="no_runner_flow",
        flow_name="stuck-docker-no-runner",
        expected_cause=Cause.CANCEL_NOT_OBSERVED,
        expected_kind=CallKind.SLEEP,
        recipe=DockerRecipe.CANCEL_UNOBSERVED,
        description="command `python -m prefect.engine`: the engine is PID 1 and no Runner sees the cancel",
        command=ENGINE_COMMAND,
        pid1_role="engine",
    ),
    DockerScenario(
        name="docker_shell_pid1",
        file="stuck_docker_shell.py",
        flow_function="shell_flow",
        flow_name="stuck-docker-shell",
        expected_cause=Cause.PID1_NO_FORWARD,
        expected_kind=CallKind.SLEEP,
        recipe=DockerRecipe.STOP_SIGNAL_SENT,
        description="command `sh -c '...; echo done'`: the shell is PID 1 and drops docker stop's SIGTERM",
        command=SHELL_COMMAND,
        pid1_role="pid1",
    ),
    DockerScenario(
        name="docker_handler_returns",
        file="stuck_docker_handler.py",
        flow_function="handler_flow",
        flow_name="stuck-docker-handler",
        expected_cause=Cause.SIGNAL_IGNORED,
        expected_kind=CallKind.SLEEP,
        recipe=DockerRecipe.STOP_SIGNAL_SENT,
        description="engine as PID 1; the flow's own SIGTERM handler logs and returns, the sleep resumes",
        command=ENGINE_COMMAND,
        pid1_role="engine",
        witnesses_sigterm=True,
        expected_delivery=Delivered.YES,
        expected_absorbed=Absorber.HANDLER_RETURNS,
    ),
    DockerScenario(
        name="docker_except_loop",
        file="stuck_docker_except.py",
        flow_function="except_flow",
        flow_name="stuck-docker-except",
        expected_cause=Cause.SIGNAL_IGNORED,
        expected_kind=CallKind.SLEEP,
        recipe=DockerRecipe.STOP_SIGNAL_SENT,
        description="engine as PID 1; `except BaseException` in a loop catches TerminationSignal and goes on",
        command=ENGINE_COMMAND,
        pid1_role="engine",
        witnesses_sigterm=True,
        expected_delivery=Delivered.YES,
        expected_absorbed=Absorber.EXCEPTION_SWALLOWED,
    ),
    DockerScenario(
        name="docker_cleanup_blocks",
        file="stuck_docker_cleanup.py",
        flow_function="cleanup_flow",
        flow_name="stuck-docker-cleanup",
        expected_cause=Cause.SIGNAL_IGNORED,
        expected_kind=CallKind.SLEEP,
        recipe=DockerRecipe.STOP_SIGNAL_SENT,
        description="engine as PID 1; TerminationSignal unwinds the flow into a `finally` whose close blocks",
        command=ENGINE_COMMAND,
        pid1_role="engine",
        witnesses_sigterm=True,
        expected_delivery=Delivered.YES,
        expected_absorbed=Absorber.CLEANUP_BLOCKS,
    ),
    DockerScenario(
        name="docker_gil_held",
        file="stuck_docker_gil.py",
        flow_function="gil_flow",
        flow_name="stuck-docker-gil",
        expected_cause=Cause.SIGNAL_PENDING,
        expected_kind=CallKind.SLEEP,
        recipe=DockerRecipe.STOP_SIGNAL_SENT,
        description="engine as PID 1; a pool thread holds the GIL in C, so Prefect's handler never runs",
        command=ENGINE_COMMAND,
        pid1_role="engine",
        expected_delivery=Delivered.YES,
        expected_absorbed=Absorber.GIL_HELD,
    ),
    DockerScenario(
        name="docker_gone_killed",
        file="stuck_docker_gone.py",
        flow_function="gone_flow",
        flow_name="stuck-docker-gone",
        expected_cause=Cause.INFRASTRUCTURE_GONE,
        expected_kind=None,
        recipe=DockerRecipe.KILLED_WHILE_CANCELLING,
        description="no Runner; cancelled, then the container was SIGKILLed (exit 137)",
        command=ENGINE_COMMAND,
        container_state="exited",
        pid1_role="engine",
    ),
    DockerScenario(
        name="docker_gone_removed",
        file="stuck_docker_gone.py",
        flow_function="gone_flow",
        flow_name="stuck-docker-gone",
        expected_cause=Cause.INFRASTRUCTURE_GONE,
        expected_kind=None,
        recipe=DockerRecipe.REMOVED_WHILE_CANCELLING,
        description="no Runner; cancelled, then the container was deleted",
        command=ENGINE_COMMAND,
        container_state="removed",
        pid1_role="engine",
    ),
    DockerScenario(
        name="docker_orphan",
        file="stuck_docker_orphan.py",
        flow_function="orphan_flow",
        flow_name="stuck-docker-orphan",
        expected_cause=Cause.ORPHANED_INFRASTRUCTURE,
        expected_kind=CallKind.SLEEP,
        recipe=DockerRecipe.FORCED_CANCELLED,
        description="no Runner; the run was forced to Cancelled while its container runs on",
        command=ENGINE_COMMAND,
        expected_state="CANCELLED",
        pid1_role="engine",
    ),
)

#: Every Docker scenario by name, in a stable order.
DOCKER_SCENARIOS: dict[str, DockerScenario] = {scenario.name: scenario for scenario in _CATALOG}


def select_docker_scenarios(names: Iterable[str] | None) -> list[DockerScenario]:
    """The scenarios named (all for None), in catalog order; unknown names raise KeyError."""
    if names is None:
        return list(DOCKER_SCENARIOS.values())
    wanted = set(names)
    unknown = sorted(wanted - set(DOCKER_SCENARIOS))
    if unknown:
        raise KeyError(
            f"unknown Docker scenario(s) {', '.join(unknown)}; known: {', '.join(DOCKER_SCENARIOS)}"
        )
    return [scenario for scenario in DOCKER_SCENARIOS.values() if scenario.name in wanted]


# -- the image -------------------------------------------------------------------------


def rootfs_tarball() -> bytes:
    """A root filesystem of symlinks and a minimal /etc; the rest is bind-mounted from the host."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:

        def add_dir(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            archive.addfile(info)

        for name, mode in (("etc", 0o755), ("tmp", 0o1777), ("root", 0o700), ("usr", 0o755), ("var", 0o755)):
            add_dir(name, mode)
        for name in ("proc", "sys", "dev", "run"):
            add_dir(name)
        for name in _MERGED_USR:
            if os.path.islink(f"/{name}"):
                info = tarfile.TarInfo(name)
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(f"/{name}")
                archive.addfile(info)
            else:
                add_dir(name)
        for name, text in _ETC.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def host_mounts(extra: Iterable[str | Path] = ()) -> list[str]:
    """Read-only bind mounts ("src:dst:ro") that make this interpreter run inside the image."""
    wanted = ["/usr"]
    wanted += [
        f"/{name}" for name in _MERGED_USR if os.path.isdir(f"/{name}") and not os.path.islink(f"/{name}")
    ]
    wanted += [os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), "/etc/ld.so.cache"]
    wanted += [os.fspath(p) for p in extra]
    chosen: list[str] = []
    for path in wanted:
        if not os.path.exists(path) or path in chosen:
            continue
        if any(path.startswith(parent.rstrip("/") + "/") for parent in chosen):
            continue
        chosen.append(path)
    return [f"{path}:{path}:ro" for path in chosen]


def image_path_env() -> str:
    """PATH inside the image: the virtualenv first, so `python` and `prefect` are this environment's."""
    return f"{sys.prefix}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def build_image(client: DockerClient, tag: str, owner: str) -> str:
    """`docker import` the tiny root filesystem as IMAGE_REPOSITORY:tag; returns the reference."""
    client.import_image(
        rootfs_tarball(),
        IMAGE_REPOSITORY,
        tag,
        changes=[f"ENV PATH={image_path_env()}", f"LABEL {OWNER_LABEL}={owner}"],
    )
    return f"{IMAGE_REPOSITORY}:{tag}"


def staging_dirs(workdir: Path, prefix: str, files: Iterable[Path]) -> tuple[Path, Path, list[str]]:
    """`<prefix>-flows` with a copy of each of `files`, and `<prefix>-ready` for the flows' ready files
    (writable by any user: a container's user writes there); and the mounts that show this interpreter
    and both directories in a container, at the same paths."""
    flows_dir = workdir / f"{prefix}-flows"
    ready_dir = workdir / f"{prefix}-ready"
    flows_dir.mkdir(exist_ok=True)
    ready_dir.mkdir(exist_ok=True)
    ready_dir.chmod(0o777)
    for path in files:
        shutil.copy2(path, flows_dir / path.name)
    return flows_dir, ready_dir, [*host_mounts([flows_dir]), f"{ready_dir}:{ready_dir}"]


def create_host_container(
    client: DockerClient,
    image: str,
    command: Sequence[str],
    mounts: Sequence[str],
    labels: Mapping[str, str],
    *,
    env: Sequence[str] = (),
    name: str | None = None,
) -> str:
    """A container of `image` that runs `command` on the host's network with `mounts` bound, created
    and not started; its id."""
    config: dict[str, Any] = {"Image": image, "Cmd": list(command)}
    if env:
        config["Env"] = list(env)
    config["Labels"] = dict(labels)
    config["HostConfig"] = {"NetworkMode": "host", "Binds": list(mounts), "AutoRemove": False}
    return client.create(config, name=name)


def check_image(
    client: DockerClient,
    image: str,
    mounts: Sequence[str],
    labels: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> float:
    """`docker run --rm --network host IMAGE python -c 'import prefect'`; returns the seconds it took."""
    started = time.monotonic()
    container = create_host_container(
        client,
        image,
        [f"{sys.prefix}/bin/python", "-c", "import prefect; print(prefect.__version__)"],
        mounts,
        labels or {},
    )
    try:
        client.start(container)
        code = client.wait(container, timeout)
        out, err = client.logs(container)
    finally:
        client.remove(container)
    if code != 0:
        raise HarnessError(
            f"`python -c 'import prefect'` failed in {image} (exit {code}): "
            f"{(err or out).decode(errors='replace')[-2000:]}"
        )
    return time.monotonic() - started


def remove_leftovers(client: DockerClient, log: Callable[[str], None] = lambda _m: None) -> int:
    """Delete containers and images of earlier sessions whose harness process is dead; returns how many."""
    removed = 0
    for summary in client.containers(filters={"label": [OWNER_LABEL]}):
        owner = summary.labels.get(OWNER_LABEL, "")
        if not _owner_alive(owner):
            remove_sidecars(client, summary.id)
            removed += client.remove(summary.id)
    for image in client.images(filters={"label": [OWNER_LABEL]}):
        owner = image.labels.get(OWNER_LABEL, "")
        if not _owner_alive(owner):
            for tag in image.repo_tags or (image.id,):
                removed += client.remove_image(tag)
    if removed:
        log(f"removed {removed} leftover container(s)/image(s) of dead demo sessions")
    return removed


def _owner_alive(owner: str) -> bool:
    """Whether the harness process named in an owner label ("<pid>-<random>") still runs."""
    pid = owner.partition("-")[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the worker --------------------------------------------------------------------------


@dataclass
class DockerWorkerProcess(SpawnedWorker):
    """A `prefect worker start --type docker` process (its log has the containers' output)."""


def start_docker_worker(harness: LocalPrefect, pool: str, name: str) -> DockerWorkerProcess:
    """Start `prefect worker start --pool POOL --type docker` in its own session, logging to a file."""
    log_path = harness.workdir / f"worker-{name}.log"
    env = harness.child_env(
        {
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
            "PYTHONUNBUFFERED": "1",
        }
    )
    command = [*prefect_command(), "worker", "start", "--pool", pool, "--type", "docker", "--name", name]
    preexec = _die_with_parent if threading.current_thread() is threading.main_thread() else None
    with log_path.open("ab") as log_file:
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(harness.workdir),
            start_new_session=True,
            preexec_fn=preexec,  # only prctl(PR_SET_PDEATHSIG): no locks
        )
    return DockerWorkerProcess(name=name, pool=pool, popen=popen, log_path=log_path)


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# -- staged runs -------------------------------------------------------------------------


@dataclass(frozen=True)
class StuckContainerRun:
    """One staged Docker run, with what the doctor should say about it."""

    scenario: str
    run_id: str
    run_name: str
    deployment_id: str
    #: `infrastructure_pid` exactly as the worker wrote it.
    infrastructure_pid: str
    container_id: str
    container_name: str | None
    #: Host PID of the container's PID 1 when staged (None once it is gone).
    pid1_host_pid: int | None
    #: Host PID of the flow engine (`python -m prefect.engine`) when staged.
    engine_host_pid: int | None
    #: The engine's PID inside the container's namespace (for the sidecar).
    engine_ns_pid: int | None
    expected_cause: Cause
    expected_kind: CallKind | None
    expected_state: str
    #: "running", "exited" or "removed".
    container_state: str
    #: "runner", "engine" or "pid1": what PID 1 of the container is.
    pid1_role: str
    #: The deployed copy of the flow program (the same path inside the container).
    file: Path
    #: The program in the package.
    source_file: Path
    #: The marked blocking line.
    line: int
    #: (file, line) the doctor should name as the blocking call, or None.
    expected_location: tuple[str, int] | None
    api_url: str
    pool_name: str
    worker_name: str
    ready_path: Path

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for printing and JSON."""
        return {
            "scenario": self.scenario,
            "run_id": self.run_id,
            "run_name": self.run_name,
            "infrastructure_pid": self.infrastructure_pid,
            "container_id": self.container_id,
            "container_name": self.container_name,
            "pid1_host_pid": self.pid1_host_pid,
            "engine_host_pid": self.engine_host_pid,
            "engine_ns_pid": self.engine_ns_pid,
            "expected_cause": self.expected_cause.value,
            "expected_kind": self.expected_kind.value if self.expected_kind else None,
            "expected_state": self.expected_state,
            "container_state": self.container_state,
            "pid1_role": self.pid1_role,
            "file": str(self.file),
            "line": self.line,
            "expected_location": list(self.expected_location) if self.expected_location else None,
        }


@dataclass
class DockerDemoEnvironment(StagedEnvironment["StuckContainerRun"]):
    """A staged environment: server, Docker worker, image and the stuck container runs."""

    harness: LocalPrefect
    client: DockerClient
    image: str
    mounts: list[str]
    worker: DockerWorkerProcess
    runs: list[StuckContainerRun]
    #: The owner label value of this session's containers.
    owner: str
    #: Seconds spent in each stage.
    timings: dict[str, float] = field(default_factory=dict)

    def containers(self) -> list[str]:
        """Ids of every container of this session that still exists (sidecars included)."""
        return [c.id for c in self.client.containers(filters={"label": [f"{OWNER_LABEL}={self.owner}"]})]


@dataclass
class _Staged:
    scenario: DockerScenario
    deployment_id: str
    ready_path: Path
    run_id: str = ""
    infrastructure_pid: str = ""
    container_id: str = ""
    container_name: str | None = None
    pid1_host_pid: int | None = None
    engine_host_pid: int | None = None
    engine_ns_pid: int | None = None


@contextlib.contextmanager
def docker_demo_environment(
    scenarios: Iterable[str] | None = None,
    *,
    harness: LocalPrefect | None = None,
    log: Callable[[str], None] = print,
    ready_timeout: float = 240.0,
    client: DockerClient | None = None,
    ui: bool = False,
) -> Iterator[DockerDemoEnvironment]:
    """Real runs stuck in Cancelling in Docker containers; everything is removed on exit.

    `harness` reuses a running `LocalPrefect` (its server and work directory);
    by default one is started and stopped here, serving Prefect's UI if `ui`
    (the containers reach it as they reach its API: on the host network).
    Raises `DockerError` when no Docker engine answers and `HarnessError` when
    a stage does not happen.
    """
    chosen = select_docker_scenarios(scenarios)
    started = time.monotonic()
    own_client = client is None
    docker = client or DockerClient(timeout=30.0)
    docker.ping()
    owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        if own_client:
            stack.callback(docker.close)
        stack.callback(remove_session, docker, owner, log)
        remove_leftovers(docker, log)
        if harness is None:
            harness = stack.enter_context(LocalPrefect(log=log, ui=ui))
        environment = _stage(harness, docker, chosen, owner, log, ready_timeout, stack)
        log(f"{len(environment.runs)} stuck container run(s) ready in {time.monotonic() - started:.0f} s")
        yield environment
        log("cleaning up: the Docker worker, the containers, the image")


def remove_session(client: DockerClient, owner: str, log: Callable[[str], None]) -> None:
    """Delete every container (sidecars first) and image of this session."""
    with contextlib.suppress(DockerError):
        for summary in client.containers(filters={"label": [f"{OWNER_LABEL}={owner}"]}):
            container_id = summary.id
            with contextlib.suppress(DockerError):
                remove_sidecars(client, container_id)
                client.remove(container_id)
    with contextlib.suppress(DockerError):
        client.remove_image(f"{IMAGE_REPOSITORY}:{owner}")
    log("removed this session's containers and image")


def _stage(
    harness: LocalPrefect,
    client: DockerClient,
    scenarios: list[DockerScenario],
    owner: str,
    log: Callable[[str], None],
    ready_timeout: float,
    stack: contextlib.ExitStack,
) -> DockerDemoEnvironment:
    stages = StageClock()
    timings, lap = stages.timings, stages.lap

    flows_dir, ready_dir, mounts = staging_dirs(harness.workdir, "docker", (s.path for s in scenarios))

    image = build_image(client, owner, owner)
    lap("image_import")
    took = check_image(client, image, mounts, {OWNER_LABEL: owner})
    log(f"image {image}: `python -c 'import prefect'` runs in a container ({took:.1f} s)")
    lap("image_check")

    _create_docker_pool(harness, DOCKER_POOL)
    staged: list[_Staged] = []
    for scenario in scenarios:
        job_variables: dict[str, Any] = {
            "image": image,
            "image_pull_policy": "Never",
            "volumes": mounts,
            "network_mode": "host",
            "env": {
                "PREFECT_API_URL": harness.api_url,
                "PREFECT_LOGGING_COLORS": "false",
                "PYTHONUNBUFFERED": "1",
            },
            "labels": {OWNER_LABEL: owner, SCENARIO_LABEL: scenario.name},
            "name": f"pcd-{scenario.name.replace('_', '-')}-{owner}",
        }
        if scenario.command is not None:
            job_variables["command"] = scenario.command
        flow_id = harness.client.create_flow_from_name(scenario.flow_name)
        deployment_id = harness.client.create_deployment(
            flow_id=flow_id,
            name=scenario.name,
            work_pool_name=DOCKER_POOL,
            entrypoint=scenario.entrypoint,
            path=str(flows_dir),
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(flows_dir)}}],
            job_variables=job_variables,
        )
        staged.append(_Staged(scenario, str(deployment_id), ready_dir / scenario.name))
    for item in staged:
        item.run_id = harness.create_run(item.deployment_id, {"ready_path": str(item.ready_path)})
    lap("deploy")

    worker = start_docker_worker(harness, DOCKER_POOL, DOCKER_WORKER)
    stack.callback(worker.stop)
    log(f"docker worker {worker.name}: started on pool {DOCKER_POOL} (pid {worker.pid})")
    log(f"waiting for {len(staged)} container run(s) to reach their blocking line")
    _wait_running_and_ready(harness, client, staged, worker, ready_timeout)
    lap("start_runs")
    log("all container runs are RUNNING at their blocking line")

    for item in staged:
        _read_processes(client, item)
    by_recipe = {recipe: [i for i in staged if i.scenario.recipe is recipe] for recipe in DockerRecipe}

    # Cancel every run at once: the frozen-Runner recipe is on a 30 s clock.
    for item in staged:
        harness.cancel_run(item.run_id)
    log(f"cancelled {len(staged)} run(s)")
    for item in by_recipe[DockerRecipe.RUNNER_FROZEN_AFTER_SIGTERM]:
        _freeze_runner_after_sigterm(harness, client, item, log)
    lap("runner_frozen")
    for item in by_recipe[DockerRecipe.STOP_SIGNAL_SENT]:
        client.kill(item.container_id, "SIGTERM")
        log(
            f"{item.scenario.name}: sent SIGTERM to PID 1 ({item.scenario.pid1_role}), "
            "as `docker stop` does first"
        )
    for item in by_recipe[DockerRecipe.STOP_SIGNAL_SENT]:
        if item.scenario.witnesses_sigterm:
            marker = Path(str(item.ready_path) + ".sigterm")
            harness.wait_until(marker.exists, 30, f"{item.scenario.name}: the flow to absorb its SIGTERM")
            harness.wait_for_run_log(item.run_id, ABSORBED_LOG_WORDS)
    for item in by_recipe[DockerRecipe.KILLED_WHILE_CANCELLING]:
        client.kill(item.container_id, "SIGKILL")
        code = client.wait(item.container_id, 30)
        _wait_worker_saw_exit(harness, worker, item)
        log(f"{item.scenario.name}: container SIGKILLed (exit {code}); the run stays Cancelling")
    for item in by_recipe[DockerRecipe.REMOVED_WHILE_CANCELLING]:
        client.remove(item.container_id)
        _wait_worker_saw_exit(harness, worker, item)
        log(f"{item.scenario.name}: container deleted; the run stays Cancelling")
    for item in by_recipe[DockerRecipe.FORCED_CANCELLED]:
        harness.wait_for_state(item.run_id, ["CANCELLING"], timeout=30)
        harness.force_state(item.run_id, "CANCELLED", CANCELLING_TIMEOUT_MESSAGE)
        log(f"{item.scenario.name}: run forced to Cancelled; its container runs on")
    lap("stuck")

    runs = [_stuck_run(harness, item, flows_dir, worker) for item in staged]
    _verify(harness, client, runs)
    lap("verify")
    return DockerDemoEnvironment(
        harness=harness,
        client=client,
        image=image,
        mounts=mounts,
        worker=worker,
        runs=runs,
        owner=owner,
        timings=timings,
    )


def _create_docker_pool(harness: LocalPrefect, name: str) -> None:
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect_docker.worker import DockerWorker  # type: ignore[import-untyped]

    template = DockerWorker.get_default_base_job_template()
    with contextlib.suppress(ObjectAlreadyExists):
        harness.client.create_work_pool(WorkPoolCreate(name=name, type="docker", base_job_template=template))


def _wait_running_and_ready(
    harness: LocalPrefect,
    client: DockerClient,
    items: list[_Staged],
    worker: DockerWorkerProcess,
    timeout: float,
) -> None:
    pending = {item.run_id: item for item in items}
    last: dict[str, str] = {}

    def check() -> bool:
        if not worker.alive():
            raise harness.error(
                f"the Docker worker exited (status {worker.popen.returncode}):\n{worker.log_text()[-3000:]}"
            )
        for run_id, run in harness.read_runs(list(pending)).items():
            item = pending[run_id]
            state = run.state.type.value if run.state is not None else "NONE"
            last[run_id] = state
            if run.state is not None and run.state.is_final():
                raise harness.error(
                    f"run {run_id} ({item.scenario.name}) ended {state} before it got stuck: "
                    f"{run.state.message}\n"
                    f"worker log:\n{worker.log_text()[-3000:]}"
                )
            if state == "RUNNING" and run.infrastructure_pid and item.ready_path.exists():
                item.infrastructure_pid = str(run.infrastructure_pid)
                item.container_id = item.infrastructure_pid.rpartition(":")[2]
                del pending[run_id]
        return not pending

    def describe() -> str:
        waiting = ", ".join(f"{i.scenario.name} ({last.get(r, '?')})" for r, i in pending.items())
        return f"container runs to be RUNNING with their ready file: {waiting}"

    harness.wait_until(check, timeout, describe, interval=0.25)


def _read_processes(client: DockerClient, item: _Staged) -> None:
    """PID 1 and the engine, from the engine's `docker top` and, when visible, our /proc."""
    info = client.inspect(item.container_id)
    item.container_name = info.name
    item.pid1_host_pid = info.host_pid
    for row in client.top(item.container_id):
        if argv_role(tuple(row.args.split())) is Role.ENGINE:
            item.engine_host_pid = row.pid
            item.engine_ns_pid = _ns_pid(row.pid)
            break


def _ns_pid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


def _freeze_runner_after_sigterm(
    harness: LocalPrefect, client: DockerClient, item: _Staged, log: Callable[[str], None]
) -> None:
    """Wait for the engine's SIGTERM handshake, then SIGSTOP the Runner (PID 1) before its SIGKILL."""
    marker = Path(str(item.ready_path) + ".sigterm")
    harness.wait_until(
        marker.exists, RUNNER_KILL_GRACE_SECONDS - 5, f"{item.scenario.name}: the Runner's SIGTERM"
    )
    # The engine's PID namespace parent (the Docker engine) may always SIGSTOP a PID 1.
    client.kill(item.container_id, "SIGSTOP")
    since = time.time() - marker.stat().st_mtime
    if since >= RUNNER_KILL_GRACE_SECONDS - 1:
        raise harness.error(
            f"{item.scenario.name}: the Runner was frozen {since:.1f} s after its SIGTERM: too late"
        )
    log(
        f"{item.scenario.name}: the engine got SIGTERM; Runner (PID 1) frozen {since:.1f} s later, "
        "before its SIGKILL"
    )


def _wait_worker_saw_exit(harness: LocalPrefect, worker: DockerWorkerProcess, item: _Staged) -> None:
    """The worker notices a dead container and tries (in vain) to mark the run Crashed; wait for that."""
    name = item.container_name or item.container_id[:12]
    needles = (
        f"'{name}' has status 'exited'",
        f"'{name}' has status 'removing'",
        f"{name} was removed",
        f"{name} was marked for removal",
    )

    def seen() -> bool:
        text = worker.log_text()
        return any(needle in text for needle in needles)

    try:
        harness.wait_until(
            seen, 60, f"the Docker worker to notice that container {name} is gone", interval=0.25
        )
    except HarnessError as exc:
        raise HarnessError(f"{exc}\n---- Docker worker log ----\n{worker.log_text()[-4000:]}") from None


def _stuck_run(
    harness: LocalPrefect, item: _Staged, flows_dir: Path, worker: DockerWorkerProcess
) -> StuckContainerRun:
    scenario = item.scenario
    deployed = flows_dir / scenario.file
    line = marker_line(deployed)
    run = harness.read_run(item.run_id)
    return StuckContainerRun(
        scenario=scenario.name,
        run_id=item.run_id,
        run_name=run.name,
        deployment_id=item.deployment_id,
        infrastructure_pid=item.infrastructure_pid,
        container_id=item.container_id,
        container_name=item.container_name,
        pid1_host_pid=item.pid1_host_pid if scenario.container_state == "running" else None,
        engine_host_pid=item.engine_host_pid if scenario.container_state == "running" else None,
        engine_ns_pid=item.engine_ns_pid,
        expected_cause=scenario.expected_cause,
        expected_kind=scenario.expected_kind,
        expected_state=scenario.expected_state,
        container_state=scenario.container_state,
        pid1_role=scenario.pid1_role,
        file=deployed,
        source_file=scenario.path,
        line=line,
        expected_location=(str(deployed), line) if scenario.expected_kind is not None else None,
        api_url=harness.api_url,
        pool_name=worker.pool,
        worker_name=worker.name,
        ready_path=item.ready_path,
    )


def _verify(harness: LocalPrefect, client: DockerClient, runs: list[StuckContainerRun]) -> None:
    """Check every run and container is where its scenario says, so a broken stage fails loudly here."""
    states = harness.read_runs([run.run_id for run in runs])
    problems = []
    for run in runs:
        state = states[run.run_id].state
        state_type = state.type.value if state is not None else None
        if state_type != run.expected_state:
            problems.append(f"{run.scenario}: state {state_type}, expected {run.expected_state}")
        try:
            status = client.inspect(run.container_id).status
        except ContainerNotFound:
            status = "removed"
        if status != run.container_state:
            problems.append(
                f"{run.scenario}: container {run.container_id[:12]} is {status}, "
                f"expected {run.container_state}"
            )
        if run.container_state == "running" and run.engine_host_pid is None:
            problems.append(f"{run.scenario}: no engine process in container {run.container_id[:12]}")
    if problems:
        raise harness.error("staged container runs are not as expected:\n  " + "\n  ".join(problems))


__all__ = [
    "ABSORBED_LOG_WORDS",
    "BLOCK_MARKER",
    "DOCKER_POOL",
    "DOCKER_SCENARIOS",
    "DOCKER_SCENARIO_DIR",
    "DOCKER_WORKER",
    "ENGINE_COMMAND",
    "IMAGE_REPOSITORY",
    "OWNER_LABEL",
    "SCENARIO_LABEL",
    "SHELL_COMMAND",
    "DockerDemoEnvironment",
    "DockerRecipe",
    "DockerScenario",
    "DockerWorkerProcess",
    "StuckContainerRun",
    "build_image",
    "check_image",
    "create_host_container",
    "docker_demo_environment",
    "host_mounts",
    "image_path_env",
    "remove_leftovers",
    "remove_session",
    "rootfs_tarball",
    "select_docker_scenarios",
    "staging_dirs",
    "start_docker_worker",
]
