"""The Docker API client and `locate_container` against the real engine and a real prefect-docker worker."""

from __future__ import annotations

import os
import sys

import pytest

from prefect_cancel_doctor.clients.docker_api import FLOW_RUN_LABEL, ContainerNotFound, DockerClient
from prefect_cancel_doctor.demo.docker_harness import (
    OWNER_LABEL,
    DockerDemoEnvironment,
    StuckContainerRun,
    rootfs_tarball,
)
from prefect_cancel_doctor.kinds import CONTAINER_NOT_FOUND, Location, parse_infrastructure_pid
from prefect_cancel_doctor.kinds.docker.locate import can_ptrace_here, locate_container
from prefect_cancel_doctor.proc.procfs import read_process
from prefect_cancel_doctor.sample import sample_process

pytestmark = [pytest.mark.server, pytest.mark.docker]

# -- the client on a plain container -----------------------------------------------------


def test_inspect_a_real_container(docker_client: DockerClient, sleeper: tuple[str, str]) -> None:
    container, run_id = sleeper
    info = docker_client.inspect(container)
    assert info.id == container and info.running and info.status == "running"
    assert info.exit_code is None and not info.oom_killed
    assert info.command[0] == f"{sys.prefix}/bin/python"
    assert (info.stop_signal, info.stop_timeout) == ("SIGINT", 7)
    assert info.flow_run_id == run_id and info.labels[FLOW_RUN_LABEL] == run_id
    assert info.host_pid is not None and info.started_at is not None and info.finished_at is None
    assert info.restart_policy in (None, "no") and info.restart_count == 0


def test_top_lists_host_pids(docker_client: DockerClient, sleeper: tuple[str, str]) -> None:
    container, _ = sleeper
    info = docker_client.inspect(container)
    rows = docker_client.top(container)
    assert [row.pid for row in rows] == [info.host_pid]
    assert "time.sleep(600)" in rows[0].args
    # The engine runs on this host: its PIDs are ours, and PID 1 of the container is NSpid 1.
    snapshot = read_process(rows[0].pid)
    assert snapshot is not None and snapshot.ns_pid == 1


def test_stats_once(docker_client: DockerClient, sleeper: tuple[str, str]) -> None:
    container, _ = sleeper
    stats = docker_client.stats(container)
    assert stats.memory_bytes is not None and stats.memory_bytes > 1_000_000
    assert stats.memory_limit_bytes is not None and stats.memory_limit_bytes >= stats.memory_bytes
    assert stats.cpu_percent is not None and 0.0 <= stats.cpu_percent < 100.0
    assert stats.pids == 1


def test_find_by_label_and_logs(docker_client: DockerClient, sleeper: tuple[str, str]) -> None:
    container, run_id = sleeper
    assert docker_client.containers_for_run(run_id) == [container]
    out, err = docker_client.logs(container)
    assert out == b"up\n" and err == b""


def test_stop_uses_the_stop_signal(docker_client: DockerClient, sleeper: tuple[str, str]) -> None:
    # GIVEN a Python PID 1 whose StopSignal is SIGINT (Python handles it: KeyboardInterrupt)
    container, _ = sleeper
    # WHEN it is stopped
    docker_client.stop(container, timeout=30)
    info = docker_client.inspect(container)
    # THEN it ended on the signal itself, long before the SIGKILL (exit 137): Python
    # re-raises SIGINT after KeyboardInterrupt, which PID 1 ignores, so it exits 128+2.
    assert info.status == "exited" and info.exit_code == 130
    assert "KeyboardInterrupt" in docker_client.logs(container)[1].decode()


def test_unknown_container(docker_client: DockerClient) -> None:
    with pytest.raises(ContainerNotFound):
        docker_client.inspect("0" * 64)
    assert docker_client.read_file("0" * 64, "/etc/hosts") is None


def test_read_file_from_a_container(docker_client: DockerClient, sleeper: tuple[str, str]) -> None:
    container, _ = sleeper
    # /etc/hosts is the engine's own bind mount; /etc/group comes from the imported image.
    assert docker_client.read_file(container, "/etc/group") == b"root:x:0:\nnogroup:x:65534:\n"
    assert docker_client.read_file(container, "/no/such/file") is None


def test_rootfs_has_the_merged_usr_links() -> None:
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(rootfs_tarball())) as archive:
        names = {m.name: m for m in archive.getmembers()}
    for link in ("bin", "lib", "sbin"):
        if os.path.islink(f"/{link}"):
            assert names[link].issym() and names[link].linkname == f"usr/{link}"
    assert {"etc/passwd", "etc/group", "etc/hosts", "etc/nsswitch.conf"} <= set(names)


# -- locate_container on the worker's containers ------------------------------------------


def _locate(run: StuckContainerRun, attach: str | None = None) -> Location:
    return locate_container(
        run.run_id, parse_infrastructure_pid(run.infrastructure_pid), attach=attach, with_stats=False
    )


def test_infrastructure_pid_format(stuck_containers: dict[str, StuckContainerRun]) -> None:
    for run in stuck_containers.values():
        ref = parse_infrastructure_pid(run.infrastructure_pid)
        assert run.infrastructure_pid == f"http+docker://localhost:{run.container_id}"
        assert (ref.kind, ref.docker_url, ref.container_id) == (
            "docker",
            "http+docker://localhost",
            run.container_id,
        )
        assert len(run.container_id) == 64


def test_worker_labels_and_env(
    docker_client: DockerClient, stuck_containers: dict[str, StuckContainerRun]
) -> None:
    run = stuck_containers["docker_no_runner"]
    raw = docker_client.inspect_raw(run.container_id)
    labels = raw["Config"]["Labels"]
    assert labels["io.prefect.flow-run-id"] == run.run_id
    assert labels["io.prefect.flow-run-name"] == run.run_name
    assert labels["io.prefect.work-pool-name"] == run.pool_name
    assert labels["io.prefect.worker-name"] == run.worker_name
    assert {"io.prefect.flow-id", "io.prefect.deployment-id", "io.prefect.version"} <= set(labels)
    env = dict(entry.split("=", 1) for entry in raw["Config"]["Env"])
    assert env["PREFECT__FLOW_RUN_ID"] == run.run_id
    assert "PREFECT_HOME" in env  # the worker passes its own


def test_locate_runner_as_pid1(stuck_containers: dict[str, StuckContainerRun]) -> None:
    # GIVEN the default command: the Runner is PID 1, the engine its child
    run = stuck_containers["docker_signal_pending"]
    # WHEN the run is located from the host
    location = _locate(run)
    # THEN the engine is the one PID to sample and PID 1 is the Runner
    assert location.unreachable is None
    assert location.pids == ((run.engine_host_pid, "engine"),)
    assert location.runner_pid == run.pid1_host_pid
    assert location.container_id == run.container_id
    container = location.container
    assert container is not None and container.attach == "host" and container.status == "running"
    assert container.command == ("prefect", "flow-run", "execute")
    assert container.pid1_command[-3:] == (f"{sys.prefix}/bin/prefect", "flow-run", "execute")
    roles = {p.role: p for p in container.processes}
    assert roles["runner"].ns_pid == 1 and roles["engine"].ns_pid == run.engine_ns_pid
    runner = read_process(run.pid1_host_pid or -1)
    assert runner is not None and runner.state == "T"  # frozen by the harness


def test_locate_engine_as_pid1(stuck_containers: dict[str, StuckContainerRun]) -> None:
    run = stuck_containers["docker_no_runner"]
    location = _locate(run)
    assert location.pids == ((run.pid1_host_pid, "engine"),)
    assert location.runner_pid is None
    assert location.container is not None
    assert location.container.command == ("python", "-m", "prefect.engine")


def test_locate_shell_as_pid1(stuck_containers: dict[str, StuckContainerRun]) -> None:
    run = stuck_containers["docker_shell_pid1"]
    location = _locate(run)
    assert location.pids == ((run.pid1_host_pid, "pid1"), (run.engine_host_pid, "engine"))
    assert location.runner_pid is None
    assert location.container is not None
    assert location.container.pid1_command == ("sh", "-c", "python -m prefect.engine; echo done")
    shell = read_process(run.pid1_host_pid or -1)
    # dash as PID 1 catches SIGINT and SIGCHLD only: the SIGTERM the harness sent was dropped.
    assert shell is not None and shell.sig_caught == (1 << 1) | (1 << 16)


def test_locate_killed_container(stuck_containers: dict[str, StuckContainerRun]) -> None:
    location = _locate(stuck_containers["docker_gone_killed"])
    assert location.pids == () and location.unreachable is None
    container = location.container
    assert container is not None
    assert (container.status, container.exit_code, container.running) == ("exited", 137, False)
    assert container.finished_at is not None


def test_locate_removed_container(stuck_containers: dict[str, StuckContainerRun]) -> None:
    location = _locate(stuck_containers["docker_gone_removed"])
    assert location.pids == () and location.unreachable is None
    assert location.container is not None and location.container.status == CONTAINER_NOT_FOUND


def test_locate_orphan_still_running(stuck_containers: dict[str, StuckContainerRun]) -> None:
    run = stuck_containers["docker_orphan"]
    location = locate_container(run.run_id, parse_infrastructure_pid(run.infrastructure_pid))
    assert location.pids == ((run.engine_host_pid, "engine"),)
    assert location.container is not None and location.container.stats is not None
    assert (location.container.stats.memory_bytes or 0) > 10_000_000


def test_locate_refuses_a_container_of_another_run(stuck_containers: dict[str, StuckContainerRun]) -> None:
    # GIVEN the infrastructure_pid of one run and the id of another
    mine = stuck_containers["docker_no_runner"]
    theirs = stuck_containers["docker_orphan"]
    location = locate_container(
        mine.run_id, parse_infrastructure_pid(theirs.infrastructure_pid), with_stats=False
    )
    # THEN the other run's container is not sampled, and the run's own one is found by its label
    assert any(f"belongs to flow run {theirs.run_id}" in note for note in location.notes)
    assert location.container_id == mine.container_id
    assert location.pids == ((mine.engine_host_pid, "engine"),)


def test_locate_in_sidecar_mode_lists_processes_without_host_pids(
    stuck_containers: dict[str, StuckContainerRun],
) -> None:
    run = stuck_containers["docker_shell_pid1"]
    location = _locate(run, attach="sidecar")
    assert location.pids == () and location.runner_pid is None
    container = location.container
    assert container is not None and container.attach == "sidecar"
    assert [(p.pid, p.role) for p in container.processes] == [
        (run.pid1_host_pid, "pid1"),
        (run.engine_host_pid, "engine"),
    ]


def test_auto_mode_here_is_host(stuck_containers: dict[str, StuckContainerRun]) -> None:
    assert can_ptrace_here()  # root here
    location = _locate(stuck_containers["docker_no_runner"], attach=None)
    assert location.container is not None and location.container.attach == "host"


def test_session_containers_are_labelled(
    docker_environment: DockerDemoEnvironment, docker_client: DockerClient
) -> None:
    ids = set(docker_environment.containers())
    running = {r.container_id for r in docker_environment.runs if r.container_state != "removed"}
    assert running <= ids
    for container in ids:
        assert (
            docker_client.inspect_raw(container)["Config"]["Labels"][OWNER_LABEL] == docker_environment.owner
        )


def test_host_sampler_reads_a_containerised_engine(stuck_containers: dict[str, StuckContainerRun]) -> None:
    # GIVEN host attach mode: the engine's host PID is in our /proc
    run = stuck_containers["docker_shell_pid1"]
    assert run.engine_host_pid is not None
    # WHEN the host sampler samples it (py-spy by host PID; --native falls back)
    sample = sample_process(run.engine_host_pid, "engine", samples=2, interval=0.05)
    # THEN the flow's line is found and each thread's kernel view is mapped through NSpid
    assert sample.proc is not None and sample.proc.ns_pid == run.engine_ns_pid
    main = next(t for t in sample.dumps[-1] if t.name == "MainThread")
    assert (main.frames[0].filename, main.frames[0].line) == (str(run.file), run.line)
    assert main.frames[0].code == "time.sleep(3600)  # demo: blocks here"
    assert main.kernel is not None and main.kernel.tid == run.engine_host_pid
    assert main.kernel.syscall_name == "clock_nanosleep"
