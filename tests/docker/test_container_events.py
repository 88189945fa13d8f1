"""`DockerClient.events` and `locate_container(since=...)` against the real Docker engine.

GIVEN a container whose PID 1 ignores SIGTERM, WHEN it is signalled and then
stopped, THEN the engine's event log (`GET /events`) says what was sent and what
happened: `kill` with the signal as the engine writes it, `die` with the exit code.

Only the session's Docker client is used, not the staged Prefect environment: the
image is `docker import`ed here as the harness does it (< 0.1 s) and removed after.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone

import pytest

from prefect_cancel_doctor.clients.docker_api import FLOW_RUN_LABEL, DockerClient
from prefect_cancel_doctor.demo.docker_harness import OWNER_LABEL, build_image, host_mounts
from prefect_cancel_doctor.kinds import parse_infrastructure_pid
from prefect_cancel_doctor.kinds.docker.locate import locate_container
from prefect_cancel_doctor.model import (
    Cause,
    ContainerEvent,
    Diagnosis,
    InfraKind,
    Report,
    Target,
    Verdict,
)

pytestmark = pytest.mark.docker

#: How an engine writes SIGTERM and SIGKILL in a `kill` event (Engine 20.10: the number).
SIGTERM = {"15", "SIGTERM"}
SIGKILL = {"9", "SIGKILL"}

# PID 1 ignores SIGTERM (the kernel would drop it anyway for a PID 1 without a handler).
_IGNORES_SIGTERM = "; ".join(
    [
        "import signal, time",
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)",
        "print('up', flush=True)",
        "time.sleep(600)",
    ]
)


@pytest.fixture(scope="module")
def image(docker_client: DockerClient) -> Iterator[tuple[str, str]]:
    """The harness's tiny imported image: (reference, owner label value)."""
    owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # `remove_leftovers` removes it once this pid is gone
    reference = build_image(docker_client, f"events-{owner}", owner)
    try:
        yield reference, owner
    finally:
        docker_client.remove_image(reference)


@pytest.fixture
def stubborn(docker_client: DockerClient, image: tuple[str, str]) -> Iterator[tuple[str, str]]:
    """A running container of a flow run whose PID 1 ignores SIGTERM: (container id, run id)."""
    reference, owner = image
    run_id = str(uuid.uuid4())
    container = docker_client.create(
        {
            "Image": reference,
            "Cmd": [f"{sys.prefix}/bin/python", "-c", _IGNORES_SIGTERM],
            "Env": [f"PREFECT__FLOW_RUN_ID={run_id}"],
            "Labels": {OWNER_LABEL: owner, FLOW_RUN_LABEL: run_id},
            "HostConfig": {"NetworkMode": "none", "Binds": host_mounts(), "AutoRemove": False},
        },
        name=f"pcd-test-events-{run_id[:8]}",
    )
    try:
        docker_client.start(container)
        deadline = time.monotonic() + 60
        while b"up" not in docker_client.logs(container)[0]:
            assert time.monotonic() < deadline, "the container did not start"
            time.sleep(0.1)
        yield container, run_id
    finally:
        docker_client.remove(container)


def _is_in_order(events: Sequence[ContainerEvent], wanted: Sequence[tuple[str, set[str] | int]]) -> bool:
    """Whether `wanted` ((action, signals / exit code)) occurs in `events` in that order."""
    position = 0
    for event in events:
        if position == len(wanted):
            break
        action, detail = wanted[position]
        if event.action != action:
            continue
        if isinstance(detail, set) and event.signal not in detail:
            continue
        if isinstance(detail, int) and event.exit_code != detail:
            continue
        position += 1
    return position == len(wanted)


def test_a_sigterm_and_a_stop_are_in_the_engines_event_log(
    docker_client: DockerClient, stubborn: tuple[str, str]
) -> None:
    container, _ = stubborn
    # GIVEN a container whose PID 1 ignores SIGTERM
    t0 = datetime.now(timezone.utc)
    # WHEN it gets a SIGTERM (`docker kill --signal TERM`)
    docker_client.kill(container, "SIGTERM")
    time.sleep(0.5)
    # THEN the engine recorded a kill with SIGTERM, and the container still runs
    events = docker_client.events(container, since=t0)
    kills = [e for e in events if e.action == "kill"]
    assert len(kills) == 1 and kills[0].signal in SIGTERM, events
    assert kills[0].exit_code is None
    assert docker_client.inspect(container).running
    assert not any(e.action == "die" for e in events)
    at = datetime.fromisoformat(kills[0].at.replace("Z", "+00:00"))
    assert at.tzinfo is not None and at.utcoffset() is not None and not at.utcoffset()
    assert t0 <= at <= datetime.now(timezone.utc)

    # WHEN it is stopped with a 1 s grace period (`docker stop -t 1`)
    t1 = datetime.now(timezone.utc)
    docker_client.stop(container, 1)
    # THEN SIGTERM, then SIGKILL, then its death with 137, in this order
    since_stop = docker_client.events(container, since=t1)
    assert _is_in_order(since_stop, [("kill", SIGTERM), ("kill", SIGKILL), ("die", 137)]), since_stop
    assert [e.at for e in since_stop] == sorted(e.at for e in since_stop)
    # and everything since the first SIGTERM, oldest first, from one read
    everything = docker_client.events(container, since=t0)
    assert _is_in_order(
        everything, [("kill", SIGTERM), ("kill", SIGTERM), ("kill", SIGKILL), ("die", 137)]
    ), everything
    assert everything[: len(events)] == events
    # `until` bounds the read: nothing of the stop before t1
    assert docker_client.events(container, since=t0, until=t1) == events


def test_locate_container_reads_the_events_since_the_cancel(
    docker_client: DockerClient, stubborn: tuple[str, str]
) -> None:
    container, run_id = stubborn
    ref = parse_infrastructure_pid(f"http+docker://localhost:{container}")
    t0 = datetime.now(timezone.utc)
    docker_client.kill(container, "SIGTERM")
    # WHEN the run's container is located without, then with, the time it entered Cancelling
    without = locate_container(run_id, ref, client=docker_client, with_stats=False)
    located = locate_container(run_id, ref, client=docker_client, with_stats=False, since=t0)
    # THEN only the second reads the engine's events: the SIGTERM it got
    assert without.container is not None and without.container.events is None
    info = located.container
    assert info is not None and info.id == container and info.running
    assert info.events is not None
    assert [(e.action, e.signal in SIGTERM) for e in info.events] == [("kill", True)]
    assert not any("could not be read" in note for note in located.notes)
    # AND the JSON report carries them
    diagnosis = Diagnosis(
        flow_run=None,
        target=Target(InfraKind.DOCKER, located.description, container_id=container, container=info),
        verdict=Verdict(Cause.SIGNAL_IGNORED, "ignored", 0.5),
    )
    document = json.loads(json.dumps(Report(None, t0.isoformat(), (diagnosis,)).to_dict()))
    (event,) = document["runs"][0]["target"]["container"]["events"]
    assert event == {
        "at": info.events[0].at,
        "action": "kill",
        "signal": info.events[0].signal,
        "exit_code": None,
    }
