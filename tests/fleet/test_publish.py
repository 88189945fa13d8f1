"""publish.py without a server: the events' shape and size, which runs a host answers for, the artifact.

The real server reads these events back in tests/fleet/test_publish_server.py; the
API's refusals are in tests/fleet/test_publish_faults.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from prefect_cancel_doctor import __version__
from prefect_cancel_doctor.fleet.artifact import MAX_ARTIFACT_CHARS, artifact_body, artifact_key
from prefect_cancel_doctor.fleet.publish import (
    CAUSE_LABEL,
    MAX_EVENT_BYTES,
    VERDICT_EVENT,
    Related,
    Seen,
    batches,
    covers,
    found_here,
    host_event,
    host_name,
    seen_here,
    verdict_event,
)
from prefect_cancel_doctor.model import Cause, Diagnosis, Frame, Role, ThreadSample, Verdict
from tests.render.test_render import sleeping

RUN_ID = "0b6c9d6e-0000-4000-8000-000000000001"
IDS = Related(flow_id="f-1", deployment_id="d-1", work_pool_id="p-1")
SEEN = Seen("node-7", ("pool",), ("w1",))


def labelled(d: Diagnosis, **labels: object) -> Diagnosis:
    assert d.flow_run is not None
    run = dataclasses.replace(d.flow_run, labels={**d.flow_run.labels, **labels})
    return dataclasses.replace(d, flow_run=run)


def test_the_event_is_the_hosts_with_the_run_and_its_objects_related_as_prefect_names_them() -> None:
    d = labelled(sleeping(), **{"prefect.worker.type": "process"})
    event = verdict_event(d, "node-7", SEEN, IDS)
    assert event["event"] == VERDICT_EVENT
    assert event["resource"] == {
        "prefect.resource.id": "prefect-cancel-doctor.host.node-7",
        "prefect.resource.name": "node-7",
        "prefect-cancel-doctor.version": __version__,
        CAUSE_LABEL: "cancel_not_observed",
    }
    assert [(r["prefect.resource.id"], r["prefect.resource.role"]) for r in event["related"]] == [
        (f"prefect.flow-run.{RUN_ID}", "flow-run"),
        ("prefect.flow.f-1", "flow"),
        ("prefect.deployment.d-1", "deployment"),
        ("prefect.work-pool.p-1", "work-pool"),
        ("prefect.worker.process.w1", "worker"),
    ]
    assert [r.get("prefect.resource.name") for r in event["related"]] == [
        "brave-otter",
        "etl",
        "nightly",
        "pool",
        "w1",
    ]
    payload = event["payload"]
    assert payload["cause"] == "cancel_not_observed"
    assert payload["confidence"] == d.verdict.confidence
    assert payload["summary"] == d.verdict.summary
    assert payload["blocking_call"]["function"] == "time.sleep"
    assert payload["blocking_call"]["filename"].endswith("sleep_main.py")
    assert payload["host"] == "node-7" and payload["doctor_version"] == __version__
    assert payload["found_here"] is True
    assert payload["stack"][0] == "[native] clock_nanosleep"
    assert payload["stack"][1].startswith("wait_forever (")
    assert payload["seen"] == {"work_pools": ["pool"], "workers": ["w1"]}


def test_a_worker_resource_id_is_its_name_slugged_as_prefect_does() -> None:
    d = labelled(sleeping(), **{"prefect.worker.type": "docker", "prefect.worker.name": "Docker Worker_1"})
    (worker,) = [
        r for r in verdict_event(d, "h", SEEN, IDS)["related"] if r["prefect.resource.role"] == "worker"
    ]
    assert worker["prefect.resource.id"] == "prefect.worker.docker.docker-worker-1"


def test_related_resources_without_ids_are_left_out_rather_than_named_wrong() -> None:
    event = verdict_event(sleeping(), "h", SEEN, Related())
    assert [r["prefect.resource.role"] for r in event["related"]] == ["flow-run"]


def test_an_event_stays_under_its_bound_whatever_the_stack_and_evidence() -> None:
    d = sleeping()
    assert d.target is not None and d.verdict.blocking_call is not None
    process = d.target.processes[0]
    call = d.verdict.blocking_call
    deep = tuple(Frame(f"f{i}", f"/app/{'é' * 200}_{i}.py", i, code="ü" * 300) for i in range(400))
    last = tuple(
        dataclasses.replace(t, frames=(Frame(call.function, call.filename or "", call.line or 0), *deep))
        if t.thread_id == call.thread_id
        else t
        for t in process.dumps[-1]
    )
    processes = (dataclasses.replace(process, dumps=(*process.dumps[:-1], last)),)
    huge = dataclasses.replace(
        d,
        target=dataclasses.replace(d.target, processes=processes),
        verdict=dataclasses.replace(d.verdict, evidence=tuple("z" * 5000 for _ in range(100))),
    )
    event = verdict_event(huge, "h", SEEN, IDS)
    assert len(json.dumps(event).encode()) <= MAX_EVENT_BYTES
    assert event["payload"]["trimmed"] is True
    assert event["payload"]["cause"] == "cancel_not_observed"  # what a trigger or a reader needs stays
    assert event["payload"]["summary"]


def test_secrets_in_the_verdict_stay_hidden_in_the_event() -> None:
    d = sleeping()
    leaky = dataclasses.replace(
        d,
        verdict=dataclasses.replace(d.verdict, evidence=("connects to postgresql://etl:hunter2@db:5432/x",)),
    )
    text = json.dumps(verdict_event(leaky, "h", SEEN, IDS))
    assert "hunter2" not in text and "postgresql://etl:<redacted>@db" in text


def test_events_go_in_one_body_until_it_would_pass_the_limit() -> None:
    events = [verdict_event(sleeping(f"run-{i}"), "h", SEEN, IDS) for i in range(30)]
    assert len(batches(events)) == 1
    split = batches(events, limit=3 * len(json.dumps(events[0])))
    assert [len(b) for b in split] == [2] * 15
    assert [e for b in split for e in b] == events


def test_a_host_answers_for_runs_found_here_launched_here_or_of_its_workers() -> None:
    here = sleeping()  # claimed by worker w1
    assert found_here(here) and covers(here, Seen("h"))
    assert here.target is not None and here.flow_run is not None
    nothing_here = dataclasses.replace(here, target=dataclasses.replace(here.target, processes=()))
    assert not found_here(nothing_here)
    assert not covers(nothing_here, Seen("h"))
    assert covers(nothing_here, Seen("h", workers=("w1",)))  # the worker that claimed it runs here
    assert covers(nothing_here, Seen("h", launched=frozenset({here.flow_run.id})))  # this host launched it
    # A worker of its pool runs here, but not the one that claimed it: in a pool shared by
    # several hosts the run may well be alive on another; "not here" is no verdict to publish.
    assert not covers(nothing_here, Seen("h", ("pool",), ("w2",)))
    assert not covers(nothing_here, Seen("h", ("pool",)))
    unclaimed = dataclasses.replace(
        nothing_here, flow_run=dataclasses.replace(here.flow_run, labels={}, workers=())
    )
    assert covers(unclaimed, Seen("h", ("pool",)))  # no worker claimed it: the pool's hosts answer
    runner_only = dataclasses.replace(
        here,
        target=dataclasses.replace(
            here.target,
            processes=tuple(dataclasses.replace(p, role=Role.RUNNER) for p in here.target.processes),
        ),
    )
    assert not found_here(runner_only)  # a local worker sampled is not the run found
    elsewhere = dataclasses.replace(here, verdict=Verdict(Cause.NOT_ATTACHABLE, "elsewhere", 0.6))
    assert not covers(elsewhere, SEEN)


def test_what_a_host_sees_is_read_from_its_worker_processes(tmp_path: Path) -> None:
    def process(pid: int, *argv: str) -> None:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")

    process(
        10, "/venv/bin/python", "/venv/bin/prefect", "worker", "start", "--pool", "etl", "--name", "etl-1"
    )
    process(11, "python", "-m", "prefect", "worker", "start", "-p", "ml", "--type=process")
    process(12, "prefect", "worker", "start", "--pool=gpu", "-n", "gpu-a")
    process(13, "python", "my_script.py", "worker", "start", "--pool", "not-prefect")
    process(14, "sleep", "3600")
    (tmp_path / "self").mkdir()
    seen = seen_here("node-7", str(tmp_path), traces=lambda: {"r-1": "/tmp/prefect-workspace-attempt-x"})
    assert seen == Seen("node-7", ("etl", "gpu", "ml"), ("etl-1", "gpu-a"), frozenset({"r-1"}))


def test_the_host_event_names_its_pools_by_id_where_known() -> None:
    event = host_event(Seen("node-7", ("etl", "ml"), ("etl-1",)), 3, {"etl": "p-etl"})
    assert event["resource"]["prefect.resource.id"] == "prefect-cancel-doctor.host.node-7"
    assert event["related"] == [
        {"prefect.resource.id": "prefect.work-pool.p-etl", "prefect.resource.role": "work-pool"}
        | {"prefect.resource.name": "etl"}
    ]
    assert event["payload"]["work_pools"] == ["etl", "ml"] and event["payload"]["verdicts_published"] == 3


def test_the_host_name_is_pcd_host_else_the_hostname_made_safe() -> None:
    assert host_name({"PCD_HOST": "node 7/a"}) == "node-7-a"
    assert host_name({}) != ""


def test_the_artifact_is_the_runs_markdown_section_under_a_stable_key() -> None:
    d = sleeping()
    body = artifact_body(d, "node-7", "http://127.0.0.1:4200/api", "2026-11-27T12:00:00+00:00")
    assert body["key"] == artifact_key(RUN_ID) == "cancel-doctor-0b6c9d6e-0000"
    assert body["type"] == "markdown" and body["flow_run_id"] == RUN_ID
    text = body["data"]
    assert text.startswith("# Why this run has not cancelled: `cancel_not_observed`")
    assert "on host `node-7` at 2026-11-27 12:00:00 UTC" in text
    assert "## brave-otter: `cancel_not_observed`" in text
    assert "**End it now**" in text and "**Fix**" in text and "**Stack of the blocking thread**" in text
    assert "| run |" not in text  # the run's section, not the scan's table


def test_a_long_artifact_is_cut_with_its_code_block_closed() -> None:
    d = sleeping()
    assert d.target is not None and d.verdict.blocking_call is not None
    call = d.verdict.blocking_call
    process = d.target.processes[0]
    deep = tuple(Frame(f"f{i}", f"/app/m{i}.py", i, code="c" * 200) for i in range(2000))
    frames = (Frame(call.function, call.filename or "", call.line or 0), *deep)
    dump = tuple(
        dataclasses.replace(t, frames=frames) if t.thread_id == call.thread_id else t
        for t in process.dumps[-1]
    )
    long = dataclasses.replace(
        d, target=dataclasses.replace(d.target, processes=(dataclasses.replace(process, dumps=(dump,)),))
    )
    text = artifact_body(long, "h", None, "2026-11-27T12:00:00+00:00")["data"]
    assert len(text) <= MAX_ARTIFACT_CHARS
    fences = [line for line in text.splitlines() if line.startswith("```")]
    assert len(fences) % 2 == 0
    assert text.endswith("`prefect-cancel-doctor diagnose` shows the rest.")


def test_thread_samples_are_untouched_by_publishing() -> None:
    d = sleeping()
    before = d.target.processes[0].dumps if d.target else ()
    verdict_event(d, "h", SEEN, IDS)
    assert d.target is not None and d.target.processes[0].dumps == before
    assert all(isinstance(t, ThreadSample) for t in before[-1])
