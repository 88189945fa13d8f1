"""Attach mode 2: sample a container's processes from a short-lived sidecar container.

Used where the container's host PIDs are not reachable from here (an engine on
another host or in another PID namespace, rootless Docker, no CAP_SYS_PTRACE).
The sidecar

- shares the target's PID namespace (``HostConfig.PidMode = "container:<id>"``),
  so it sees the target's processes under their namespace PIDs (PID 1 is the
  target's PID 1) and a /proc that describes them;
- has ``CAP_SYS_PTRACE`` and runs as root, so py-spy may attach;
- reuses the target's image (by id: nothing is pulled) and its mounts, read-only
  (``VolumesFrom: ["<id>:ro"]``) — py-spy's ``--native`` unwinder needs the
  same shared libraries the target maps (without them native frames come back
  as bare addresses);
- gets our own py-spy binary (the wheel's static executable, the one the host
  sampler runs) bind-mounted read-only at `PYSPY_PATH`, or copied in through the
  engine's archive endpoint when the engine is not local;
- has no network, `AutoRemove` off so that its output can be read from the logs
  endpoint, and is ALWAYS force-deleted afterwards (``finally``).

`sample_container` runs one sidecar with a POSIX shell script (the image's
``/bin/sh``) that, for a few rounds, copies the kernel's view of every process
(`stat`, `status`, per-thread `stat`/`status`/`comm`/`wchan`/`syscall`, and
`cmdline` when ``cat`` exists) and runs ``py-spy dump --json [--native]`` on
each. The host rebuilds a small /proc tree from that output and reads it with
the same `procfs` readers as the host sampler, so the result is the same
`ProcessSample`/`ThreadSample` objects, with namespace PIDs. An image without
``/bin/sh`` falls back to one sidecar per py-spy dump (slower, no kernel view).

Measured with Docker 20.10 on 2 cores: one sidecar run costs 0.3-0.7 s; from
inside the namespace ``--native`` works (``clock_nanosleep``, ``sqlite3_step``,
...), while from the host py-spy 0.4.3 fails with ``UNW_EBADREG``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect_cancel_doctor.clients.docker_api import (
    FLOW_RUN_ENV,
    ContainerDetails,
    DockerApiError,
    DockerClient,
    DockerError,
)
from prefect_cancel_doctor.model import ProcessSample, Role, ThreadSample
from prefect_cancel_doctor.proc.roles import argv_role
from prefect_cancel_doctor.sample.classify import is_library
from prefect_cancel_doctor.sample.namespace import (
    MAX_SOURCE_FILES,
    PROBE_ENV,
    PROCESS_HEADER,
    SCRIPT,
    ContainerSample,
    build_sample,
    parse_script_output,
    probe_source,
    scratch_root,
    with_sources,
)
from prefect_cancel_doctor.sample.pyspy import (
    NativeUnavailable,
    NotPython,
    SamplerError,
    classify_error,
    find_py_spy,
    parse_dump,
)

#: Label on every sidecar; its value is the target container's id.
SIDECAR_LABEL = "io.prefect-cancel-doctor.sidecar"
#: Where py-spy appears inside the sidecar.
PYSPY_PATH = "/.pcd-py-spy"
#: The shell the script runs with; an image without it gets the py-spy-only fallback.
SHELL = "/bin/sh"


class SidecarError(DockerError):
    """A sidecar could not be run, or said nothing usable."""


class _EntrypointMissing(SidecarError):
    """The image has no such executable (no /bin/sh): use the py-spy-only fallback."""


@dataclass(frozen=True)
class SidecarRun:
    """What one sidecar printed."""

    container_id: str
    exit_code: int
    stdout: bytes
    stderr: bytes
    seconds: float


# -- one sidecar ---------------------------------------------------------------------


def sidecar_config(
    target: ContainerDetails,
    entrypoint: Sequence[str],
    command: Sequence[str],
    *,
    pyspy_bind: str | None,
) -> dict[str, Any]:
    """The `POST /containers/create` body of a sidecar for the inspected container `target`.

    `pyspy_bind` is the py-spy binary's path on the engine's host, bind-mounted
    read-only at `PYSPY_PATH`; None when it is copied in instead.
    """
    target_id = target.info.id
    host_config: dict[str, Any] = {
        "PidMode": f"container:{target_id}",
        "CapAdd": ["SYS_PTRACE"],
        "AutoRemove": False,
        "NetworkMode": "none",
        "VolumesFrom": [f"{target_id}:ro"],
        "Binds": [f"{pyspy_bind}:{PYSPY_PATH}:ro"] if pyspy_bind else [],
        "RestartPolicy": {"Name": "no"},
    }
    return {
        "Image": target.image_id,
        "Entrypoint": list(entrypoint),
        "Cmd": list(command),
        "User": "0:0",
        "WorkingDir": "/",
        "Env": ["RUST_BACKTRACE=0", "RUST_LIB_BACKTRACE=0", f"{PROBE_ENV}={probe_source()}"],
        "Labels": {SIDECAR_LABEL: target_id},
        "NetworkDisabled": True,
        "AttachStdout": False,
        "AttachStderr": False,
        "Tty": False,
        "HostConfig": host_config,
    }


def run_sidecar(
    client: DockerClient,
    container_id: str,
    entrypoint: Sequence[str],
    command: Sequence[str],
    *,
    timeout: float = 60.0,
    pyspy: str | None = None,
    target: ContainerDetails | None = None,
) -> SidecarRun:
    """Run one sidecar next to `container_id` until it exits (at most `timeout` s); always delete it."""
    started = time.monotonic()
    details = target if target is not None else client.inspect_details(container_id)
    if not details.info.running:
        raise SidecarError(f"container {container_id[:12]} is not running: nothing to attach to")
    binary = os.path.realpath(pyspy or find_py_spy())
    bind = binary if client.endpoint.socket_path is not None and os.path.isfile(binary) else None
    config = sidecar_config(details, entrypoint, command, pyspy_bind=bind)
    name = f"pcd-sidecar-{details.info.id[:12]}-{uuid.uuid4().hex[:8]}"
    sidecar_id = client.create(config, name=name)
    try:
        if bind is None:
            client.put_archive(sidecar_id, "/", _binary_tar(binary, PYSPY_PATH.lstrip("/")))
        try:
            client.start(sidecar_id)
        except DockerApiError as exc:
            text = str(exc)
            if exc.status_code == 400 and ("executable file not found" in text or "no such file" in text):
                raise _EntrypointMissing(f"the image has no {entrypoint[0]}") from exc
            raise
        try:
            exit_code = client.wait(sidecar_id, timeout)
        except DockerError as exc:
            raise SidecarError(
                f"the sidecar next to {container_id[:12]} did not finish within {timeout:g} s ({exc}); "
                "it was deleted",
                hint="check the target is not stopped (state T) by an interrupted ptrace: "
                f"`docker top {container_id[:12]} -o pid,stat,args`",
            ) from exc
        stdout, stderr = client.logs(sidecar_id)
    finally:
        with contextlib.suppress(DockerError):
            client.remove(sidecar_id, force=True)
    return SidecarRun(sidecar_id, exit_code, stdout, stderr, time.monotonic() - started)


def list_sidecars(client: DockerClient, container_id: str | None = None) -> list[str]:
    """Ids of sidecars that still exist (for all targets, or one target)."""
    selector = f"{SIDECAR_LABEL}={container_id}" if container_id else SIDECAR_LABEL
    return [c.id for c in client.containers(filters={"label": [selector]})]


def remove_sidecars(client: DockerClient, container_id: str | None = None) -> int:
    """Force-delete leftover sidecars (a killed doctor cannot run its `finally`); returns how many."""
    return sum(client.remove(sidecar) for sidecar in list_sidecars(client, container_id))


def _binary_tar(path: str, name: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = archive.gettarinfo(path, arcname=name)
        info.mode = 0o755
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        with open(path, "rb") as handle:
            archive.addfile(info, handle)
    return buffer.getvalue()


# -- one dump ------------------------------------------------------------------------


def sidecar_dump(
    container_id: str,
    ns_pid: int,
    *,
    client: DockerClient,
    native: bool = False,
    locals: bool = False,
    timeout: float = 30.0,
    pyspy: str | None = None,
) -> tuple[ThreadSample, ...]:
    """`py-spy dump --pid <ns_pid> --json [--native]` from a sidecar; the host sampler's `ThreadSample`s.

    Raises the host sampler's errors (NotPython, ProcessGone, PermissionDenied,
    NativeUnavailable, SamplerError) from py-spy's own message.
    """
    command = ["dump", "--pid", str(ns_pid), "--json"]
    if native:
        command.append("--native")
    if locals:
        command.append("--locals")
    run = run_sidecar(client, container_id, [PYSPY_PATH], command, timeout=timeout, pyspy=pyspy)
    if run.exit_code != 0:
        raise classify_error((run.stderr + run.stdout).decode("utf-8", "replace"), native=native)
    try:
        return parse_dump(run.stdout.decode("utf-8", "replace"))
    except (ValueError, KeyError, TypeError) as exc:
        raise SamplerError(f"could not parse py-spy output from the sidecar: {exc}") from exc


def sidecar_processes(
    container_id: str, *, client: DockerClient, timeout: float = 30.0, pyspy: str | None = None
) -> list[tuple[int, tuple[str, ...]]]:
    """(namespace PID, argv) of the Python processes under PID 1, from `py-spy dump --subprocesses`.

    Needs PID 1 to be Python (py-spy refuses to start from anything else).
    """
    run = run_sidecar(
        client,
        container_id,
        [PYSPY_PATH],
        ["dump", "--pid", "1", "--subprocesses"],
        timeout=timeout,
        pyspy=pyspy,
    )
    text = run.stdout.decode("utf-8", "replace")
    if run.exit_code != 0:
        raise classify_error(text + run.stderr.decode("utf-8", "replace"), native=False)
    return [(int(pid), tuple(cmd.split())) for pid, cmd in PROCESS_HEADER.findall(text)]


# -- a whole container -------------------------------------------------------------------


def sample_container(
    container_id: str,
    *,
    client: DockerClient,
    samples: int = 5,
    interval: float = 0.2,
    native: bool = True,
    locals: bool = False,
    timeout: float = 60.0,
    pyspy: str | None = None,
    read_source: bool = True,
) -> ContainerSample:
    """Sample every process of a running container from a sidecar: roles, kernel view, stacks.

    `samples` rounds `interval` s apart, each a py-spy dump of every process.
    Source lines of user code (not site-packages, not the standard library) are
    read from the container's filesystem through the engine's archive endpoint.
    """
    started = time.monotonic()
    target = client.inspect_details(container_id)
    flow_run_id = target.env.get(FLOW_RUN_ENV)
    try:
        result = _sample_with_script(
            client, target, samples, interval, native, locals, timeout, pyspy, flow_run_id
        )
    except _EntrypointMissing:
        result = _sample_pyspy_only(client, target, samples, native, locals, timeout, pyspy)
    processes = result.processes
    if read_source:
        fetched = _archive_sources(client, target.info.id, processes, have=result.sources)
        if fetched:  # the except reader sees every file of the stack, the probe's and these
            processes = with_sources(processes, {**result.sources, **fetched})
    return dataclasses.replace(result, processes=processes, seconds=round(time.monotonic() - started, 3))


def _sample_with_script(
    client: DockerClient,
    target: ContainerDetails,
    rounds: int,
    interval: float,
    native: bool,
    locals: bool,
    timeout: float,
    pyspy: str | None,
    flow_run_id: str | None,
) -> ContainerSample:
    flags = (["--native"] if native else []) + (["--locals"] if locals else [])
    command = ["-c", SCRIPT, "pcd-sidecar", PYSPY_PATH, str(max(1, rounds)), f"{interval:g}", *flags]
    run = run_sidecar(client, target.info.id, [SHELL], command, timeout=timeout, pyspy=pyspy, target=target)
    collected = parse_script_output(run.stdout)
    if not collected.finished:
        detail = (run.stderr or run.stdout[-500:]).decode("utf-8", "replace").strip()
        raise SidecarError(f"the sidecar script stopped early (exit code {run.exit_code}): {detail}")
    with tempfile.TemporaryDirectory(prefix="pcd-sidecar-", dir=scratch_root()) as scratch:
        return build_sample(collected, Path(scratch), flow_run_id)


def _sample_pyspy_only(
    client: DockerClient,
    target: ContainerDetails,
    rounds: int,
    native: bool,
    locals: bool,
    timeout: float,
    pyspy: str | None,
) -> ContainerSample:
    """No shell in the image: one sidecar to list the Python processes, one per dump (no /proc view)."""
    container_id = target.info.id
    notes = ["the image has no /bin/sh: sampled with one sidecar per py-spy dump, without the kernel's view"]
    try:
        found = sidecar_processes(container_id, client=client, timeout=timeout, pyspy=pyspy)
    except NotPython as exc:
        raise SidecarError(
            f"PID 1 of container {container_id[:12]} is not Python and its image has no shell: "
            f"the sidecar cannot find the flow's processes ({exc})",
            hint="run prefect-cancel-doctor on the Docker host (host attach mode), as root",
        ) from exc
    processes = []
    for pid, argv in found:
        kind = argv_role(argv)
        if kind is Role.RUNNER:
            continue
        role = Role.ENGINE if kind is Role.ENGINE else Role.PID1 if pid == 1 else Role.CHILD
        dumps: list[tuple[ThreadSample, ...]] = []
        errors: list[str] = []
        use_native = native
        for _ in range(max(1, rounds)):
            try:
                dumps.append(
                    sidecar_dump(
                        container_id,
                        pid,
                        client=client,
                        native=use_native,
                        locals=locals,
                        timeout=timeout,
                        pyspy=pyspy,
                    )
                )
            except NativeUnavailable as exc:
                use_native = False
                errors.append(f"py-spy --native failed in the sidecar ({exc}); fell back to plain dumps")
            except SamplerError as exc:
                errors.append(str(exc))
                break
        processes.append(
            ProcessSample(pid, role, None, tuple(dumps), use_native and bool(dumps), tuple(errors))
        )
    return ContainerSample(tuple(processes), None, "pyspy-only", tuple(notes))


def _archive_sources(
    client: DockerClient, container_id: str, processes: tuple[ProcessSample, ...], have: Mapping[str, str]
) -> dict[str, str]:
    """The user-code files of the stacks that the probe did not read, from the container's own
    filesystem through the engine's archive endpoint (where the probe could not run)."""
    wanted: list[str] = []
    for process in processes:
        for dump in process.dumps:
            for thread in dump:
                for frame in thread.frames:
                    name = frame.filename
                    if name.startswith("/") and not is_library(name) and name not in have:
                        wanted.append(name)
    sources: dict[str, str] = {}
    for name in list(dict.fromkeys(wanted))[:MAX_SOURCE_FILES]:
        with contextlib.suppress(DockerError, tarfile.TarError, OSError):
            data = client.read_file(container_id, name)
            if data is not None:
                sources[name] = data.decode("utf-8", "replace")
    return sources


# -- clean-up ----------------------------------------------------------------------------


@contextlib.contextmanager
def no_leftover_sidecars(client: DockerClient, container_id: str | None = None) -> Iterator[None]:
    """Delete any sidecar of `container_id` (or all) on the way out, whatever happened."""
    try:
        yield
    finally:
        with contextlib.suppress(DockerError):
            remove_sidecars(client, container_id)


__all__ = [
    "PYSPY_PATH",
    "SHELL",
    "SIDECAR_LABEL",
    "SidecarError",
    "SidecarRun",
    "list_sidecars",
    "no_leftover_sidecars",
    "remove_sidecars",
    "run_sidecar",
    "sample_container",
    "sidecar_config",
    "sidecar_dump",
    "sidecar_processes",
]
