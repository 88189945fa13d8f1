"""Attach mode 2 for real: py-spy in a sidecar sharing a stuck container's PID namespace."""

from __future__ import annotations

import pytest

from prefect_cancel_doctor.clients.docker_api import DockerClient
from prefect_cancel_doctor.demo.docker_harness import DockerDemoEnvironment, StuckContainerRun
from prefect_cancel_doctor.kinds.docker import sidecar as sidecar_module
from prefect_cancel_doctor.kinds.docker.sidecar import (
    SIDECAR_LABEL,
    list_sidecars,
    sample_container,
    sidecar_dump,
    sidecar_processes,
)
from prefect_cancel_doctor.model import ThreadSample
from prefect_cancel_doctor.sample import NativeUnavailable, NotPython
from prefect_cancel_doctor.sample.pyspy import SamplerError, dump

pytestmark = [pytest.mark.server, pytest.mark.docker]


def _main(threads: tuple[ThreadSample, ...]) -> ThreadSample:
    return next(t for t in threads if t.name == "MainThread")


def _no_sidecars(client: DockerClient) -> None:
    assert list_sidecars(client) == []
    assert client.containers(filters={"label": [SIDECAR_LABEL]}) == []


def test_sidecar_samples_a_stuck_flow(
    docker_client: DockerClient, stuck_containers: dict[str, StuckContainerRun]
) -> None:
    # GIVEN a flow stuck in a SQLite busy wait under a frozen Runner (PID 1)
    run = stuck_containers["docker_signal_pending"]
    # WHEN the container is sampled from a sidecar
    sample = sample_container(run.container_id, client=docker_client, samples=3, interval=0.1)
    # THEN the engine's main thread is at the marked line, inside sqlite3, in C
    assert sample.method == "script"
    engine = next(p for p in sample.processes if p.role == "engine")
    assert engine.pid == run.engine_ns_pid and engine.native and not engine.errors
    assert len(engine.dumps) == 3
    main = _main(engine.dumps[-1])
    top = main.frames[0]
    assert (top.filename, top.line) == (str(run.file), run.line)
    assert top.code == 'waiter.execute("BEGIN EXCLUSIVE")  # demo: blocks here'
    # native frames from the first round's dump only: py-spy's unwinding pauses the target ~10x
    assert "sqlite3_step" in _main(engine.dumps[0]).native_frames
    assert [_main(d).native_frames for d in engine.dumps[1:]] == [(), ()]
    # the kernel's view, read inside the namespace, is merged per thread
    assert main.kernel is not None and main.kernel.tid == run.engine_ns_pid
    assert main.kernel.syscall_name == "clock_nanosleep"
    assert engine.proc is not None and engine.proc.cmdline[-2:] == ("-m", "prefect.engine")
    # the Runner (PID 1) is read, not sampled, and is frozen
    assert sample.runner is not None and sample.runner.pid == 1 and sample.runner.state == "T"
    assert all(p.role != "runner" for p in sample.processes)
    # AND no sidecar is left behind
    _no_sidecars(docker_client)


def test_sidecar_and_host_dumps_agree(
    docker_client: DockerClient, stuck_containers: dict[str, StuckContainerRun]
) -> None:
    run = stuck_containers["docker_no_runner"]
    assert run.engine_host_pid is not None and run.engine_ns_pid == 1
    from_sidecar = sidecar_dump(run.container_id, 1, client=docker_client, native=False)
    from_host = dump(run.engine_host_pid, native=False)
    assert {t.name for t in from_sidecar} == {t.name for t in from_host}
    assert _main(from_sidecar).frames == _main(from_host).frames
    # thread ids are the namespace's in both (py-spy reads them from the target)
    assert _main(from_sidecar).native_id == _main(from_host).native_id == 1
    _no_sidecars(docker_client)


def test_native_stacks_need_the_sidecar(
    docker_client: DockerClient, stuck_containers: dict[str, StuckContainerRun]
) -> None:
    # Observed with py-spy 0.4.3: `--native` on a containerised process from the
    # host fails (UNW_EBADREG), from inside the PID namespace it works.
    run = stuck_containers["docker_no_runner"]
    assert run.engine_host_pid is not None
    try:
        host_threads = dump(run.engine_host_pid, native=True)
    except NativeUnavailable as exc:
        assert "UNW_EBADREG" in str(exc)
    else:  # a later py-spy may fix it; then it must agree with the sidecar
        assert "clock_nanosleep" in _main(host_threads).native_frames
    in_namespace = sidecar_dump(run.container_id, 1, client=docker_client, native=True)
    assert _main(in_namespace).native_frames[:2] == ("clock_nanosleep", "time_sleep")
    _no_sidecars(docker_client)


def test_shell_pid1_is_not_python(
    docker_client: DockerClient, stuck_containers: dict[str, StuckContainerRun]
) -> None:
    run = stuck_containers["docker_shell_pid1"]
    with pytest.raises(NotPython):
        sidecar_dump(run.container_id, 1, client=docker_client)
    sample = sample_container(run.container_id, client=docker_client, samples=1)
    by_role = {p.role: p for p in sample.processes}
    assert not by_role["pid1"].python and by_role["pid1"].proc is not None
    assert by_role["pid1"].proc.cmdline == ("sh", "-c", "python -m prefect.engine; echo done")
    assert by_role["engine"].pid == run.engine_ns_pid
    assert (_main(by_role["engine"].dumps[0]).frames[0].line) == run.line
    _no_sidecars(docker_client)


def test_pyspy_only_fallback_without_a_shell(
    docker_client: DockerClient,
    stuck_containers: dict[str, StuckContainerRun],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN an image without the shell the script needs
    monkeypatch.setattr(sidecar_module, "SHELL", "/no/such/sh")
    run = stuck_containers["docker_orphan"]
    # WHEN the container is sampled
    sample = sample_container(run.container_id, client=docker_client, samples=2)
    # THEN one sidecar per dump still finds the engine (PID 1 here) and its line, without /proc
    assert sample.method == "pyspy-only"
    (engine,) = sample.processes
    assert (engine.pid, engine.role, engine.proc) == (1, "engine", None)
    assert len(engine.dumps) == 2
    top = _main(engine.dumps[-1]).frames[0]
    assert (top.filename, top.line, top.code) == (
        str(run.file),
        run.line,
        "time.sleep(3600)  # demo: blocks here",
    )
    _no_sidecars(docker_client)


def test_subprocess_listing(
    docker_client: DockerClient, stuck_containers: dict[str, StuckContainerRun]
) -> None:
    run = stuck_containers["docker_no_runner"]
    assert sidecar_processes(run.container_id, client=docker_client) == [
        (1, ("python", "-m", "prefect.engine"))
    ]
    _no_sidecars(docker_client)


def test_pyspy_cannot_dump_a_stopped_process(
    docker_client: DockerClient, stuck_containers: dict[str, StuckContainerRun]
) -> None:
    # Observed with py-spy 0.4.3: a process in state T (here the frozen Runner) cannot be
    # dumped ("Failed to suspend process: unexpected waitpid result ... SIGSTOP"), and it stays stopped.
    run = stuck_containers["docker_signal_pending"]
    with pytest.raises(SamplerError, match="Failed to suspend process"):
        sidecar_dump(run.container_id, 1, client=docker_client)
    sample = sample_container(run.container_id, client=docker_client, samples=1, read_source=False)
    assert sample.runner is not None and sample.runner.state == "T"
    _no_sidecars(docker_client)


def test_sidecar_is_deleted_even_when_it_fails(
    docker_client: DockerClient, docker_environment: DockerDemoEnvironment
) -> None:
    run = docker_environment.run("docker_no_runner")
    before = set(docker_environment.containers())
    with pytest.raises(sidecar_module.SidecarError):
        sidecar_module.run_sidecar(
            docker_client, run.container_id, ["/bin/sh"], ["-c", "sleep 30"], timeout=1.0
        )
    assert set(docker_environment.containers()) == before
    _no_sidecars(docker_client)
