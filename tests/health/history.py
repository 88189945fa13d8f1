"""A realistic cancellation history on a real Prefect server, seeded through its API.

Thousands of runs across deployments, work pools and workers: most complete,
some are cancelled quickly, some slowly, some are left in Cancelling until the
server's own cancelling timeout marks them Cancelled ("Flow run cancellation
timed out…"), some complete or fail after the cancel (forced, as the UI's
"Change state" does: the server rejects it otherwise), a cancelled parent whose
sub-deployment runs keep running, a run stuck in Cancelling that holds its
deployment's concurrency slot, runs stuck on hosts the doctor cannot reach.

Everything goes through the public REST API, in bulk where the API allows it
(`POST /deployments/{id}/create_flow_run/bulk`, 100 runs a request;
`POST /flow_runs/bulk_set_state`, 50 runs a request, which records each state
with the server's clock — the API takes no explicit timestamps). Time to
cancel is therefore real time: quick cancels take milliseconds, slow ones
seconds, and timed-out ones the server's cancelling timeout.

The truth the tests compare against is read back from the server's state
history table (`GET /flow_run_states/`), not from its events, which is what
the report reads.

`python -m tests.health.history OUT_DIR` seeds a throw-away server, stages two
really stuck runs and writes the report in every format (the README example
and the screenshot come from it).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

TIMEOUT_MESSAGE = "Flow run cancellation timed out; marked this flow run as Cancelled."


@dataclass(frozen=True)
class Plan:
    """How many runs of one deployment end which way."""

    flow: str
    deployment: str
    pool: str
    workers: tuple[str, ...]
    completed: int
    quick: int
    #: Cancelled after these delays (seconds), one run per entry.
    slow: tuple[float, ...] = ()
    #: Left in Cancelling: the server's cancelling timeout ends them.
    timed_out: int = 0
    #: Completed after the cancel.
    ignored_completed: int = 0
    #: Failed after the cancel.
    ignored_failed: int = 0

    @property
    def key(self) -> str:
        return f"{self.flow}/{self.deployment}"


def default_plan(scale: int = 1) -> list[Plan]:
    """About 2,740 runs (times `scale`), about 445 of them cancelled; 10 the server times out (each
    takes the server seconds on SQLite: the longest part of the seeding)."""
    return [
        Plan("ingest", "hourly", "etl-pool", ("etl-worker-1", "etl-worker-2"), 900 * scale, 150 * scale,
             (2.0, 3.0) * 5 * scale),
        Plan("transform", "nightly", "etl-pool", ("etl-worker-1", "etl-worker-2"), 700 * scale, 60 * scale,
             (2.5, 4.0, 5.5, 7.0) * 10 * scale, timed_out=3 * scale),
        Plan("train", "gpu", "ml-pool", ("gpu-worker-1", "gpu-worker-2"), 300 * scale, 20 * scale,
             (3.0, 5.0, 7.0) * 10 * scale, timed_out=5 * scale, ignored_completed=10 * scale,
             ignored_failed=5 * scale),
        Plan("report", "daily", "ml-pool", ("gpu-worker-1",), 250 * scale, 80 * scale),
        Plan("export", "s3", "k8s-pool", ("k8s-worker-1",), 150 * scale, 30 * scale, (6.0,) * 5 * scale,
             timed_out=2 * scale),
    ]  # fmt: skip


@dataclass
class Truth:
    """One cancel as the server recorded it in its state table."""

    run_id: str
    deployment: str | None
    pool: str | None
    worker: str | None
    requested_at: datetime
    ended_at: datetime | None
    end_type: str | None
    end_message: str | None
    #: What the seeding meant it to be: quick, slow, timed_out, ignored, cancelling, other.
    intent: str

    @property
    def seconds(self) -> float | None:
        return (self.ended_at - self.requested_at).total_seconds() if self.ended_at else None


@dataclass
class SeededFleet:
    """What was seeded, for the tests to compare the report against."""

    api_url: str
    total_runs: int
    truth: dict[str, Truth] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    #: Runs stuck in Cancelling through the API only (remote hosts), by id.
    remote_stuck: dict[str, str] = field(default_factory=dict)
    #: The run holding its deployment's concurrency slot.
    slot_run: str = ""
    slot_deployment: str = ""
    parent_run: str = ""
    child_runs: tuple[str, ...] = ()
    requests: int = 0


class Api:
    """A small REST client for seeding: retries what a busy SQLite server refuses now and then."""

    def __init__(self, api_url: str) -> None:
        self.url = api_url
        self.http = httpx.Client(base_url=api_url + "/", timeout=120)
        self.requests = 0

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, body: Any = None, *, idempotent: bool = True) -> Any:
        for attempt in range(12):
            self.requests += 1
            try:
                response = self.http.request(method, path, json=body)
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError, httpx.WriteError):
                if not idempotent:
                    raise
                time.sleep(0.2 * (attempt + 1))
                continue
            if response.status_code == 503:
                time.sleep(0.2 * (attempt + 1))
                continue
            response.raise_for_status()
            return response.json() if response.content else None
        raise RuntimeError(f"{method} {path}: the server kept refusing")

    # -- objects

    def pool(self, name: str, concurrency_limit: int | None = None) -> None:
        body: dict[str, Any] = {"name": name, "type": "process"}
        if concurrency_limit is not None:
            body["concurrency_limit"] = concurrency_limit
        with contextlib.suppress(httpx.HTTPStatusError):  # exists already
            self.call("POST", "work_pools/", body)

    def deployment(self, flow: str, name: str, pool: str, concurrency_limit: int | None = None) -> str:
        flow_id = self.call("POST", "flows/", {"name": flow})["id"]
        body: dict[str, Any] = {"name": name, "flow_id": flow_id, "work_pool_name": pool}
        if concurrency_limit is not None:
            body["concurrency_limit"] = concurrency_limit
        return str(self.call("POST", "deployments/", body)["id"])

    def create_runs(self, deployment_id: str, state: str, workers: Sequence[str], count: int) -> list[str]:
        """`count` runs in `state`, 100 a request, workers' labels round-robin; returns their ids.

        The server creates a bulk in one transaction; when SQLite is busy the
        items fail ("database is locked"). Those are sent again, with the same
        idempotency keys, so that no run is created twice.
        """
        pending = [
            {
                "state": {"type": state},
                "labels": {"prefect.worker.name": workers[i % len(workers)]},
                "idempotency_key": str(uuid.uuid4()),
            }
            for i in range(count)
        ]
        created: dict[str, str] = {}
        for _ in range(30):
            if not pending:
                break
            retry = []
            for start in range(0, len(pending), 100):
                batch = pending[start : start + 100]
                result = self.call("POST", f"deployments/{deployment_id}/create_flow_run/bulk", batch)
                for item, outcome in zip(batch, result["results"], strict=True):
                    if outcome["status"] == "CREATED":
                        created[item["idempotency_key"]] = outcome["flow_run_id"]
                    else:
                        retry.append(item)
            if retry:
                time.sleep(0.5)
            pending = retry
        if pending:
            raise RuntimeError(f"{len(pending)} run(s) could not be created")
        return list(created.values())

    def set_states(
        self, ids: Sequence[str], state: str, *, force: bool = False, message: str | None = None
    ) -> None:
        """Propose `state` for these runs, 50 a request (`bulk_set_state`)."""
        for start in range(0, len(ids), 50):
            chunk = list(ids[start : start + 50])
            body: dict[str, Any] = {"type": state}
            if message:
                body["message"] = message
            result = self.call(
                "POST",
                "flow_runs/bulk_set_state",
                {"flow_runs": {"id": {"any_": chunk}}, "state": body, "force": force, "limit": 50},
            )
            refused = [r for r in result["results"] if r["status"] != "ACCEPT"]
            if refused:
                # An ABORT from a busy database: propose it again for those runs only.
                reasons = {str((r.get("details") or {}).get("reason"))[:80] for r in refused}
                assert all("locked" in reason for reason in reasons), (state, reasons)
                time.sleep(0.5)
                self.set_states([r["flow_run_id"] for r in refused], state, force=force, message=message)

    def set_state(self, run_id: str, state: str, *, force: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self.call(
            "POST", f"flow_runs/{run_id}/set_state", {"state": {"type": state}, "force": force}
        )
        assert result["status"] == "ACCEPT", result
        return result

    def count(self, flow_runs: dict[str, Any]) -> int:
        return int(self.call("POST", "flow_runs/count", {"flow_runs": flow_runs}))

    def event_total(self, prefixes: Sequence[str], since: str) -> int:
        body = {"filter": {"event": {"prefix": list(prefixes)}, "occurred": {"since": since}}, "limit": 1}
        return int(self.call("POST", "events/filter", body)["total"])

    def history(self, run_id: str) -> list[dict[str, Any]]:
        states = self.call("GET", f"flow_run_states/?flow_run_id={run_id}")
        return sorted(states, key=lambda s: s["timestamp"])

    def runs(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), 200):
            body = {"flow_runs": {"id": {"any_": list(ids[start : start + 200])}}, "limit": 200}
            found.extend(self.call("POST", "flow_runs/filter", body))
        return found


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- phase 1: the history ----------------------------------------------------------------


def seed_history(
    api: Api, plans: Sequence[Plan], fleet: SeededFleet, log: Callable[[str], None], timeout_seconds: float
) -> dict[str, str]:
    """Seed the plans; returns run id → intent for every cancelled run. Waits for the server's timeouts."""
    clock = time.monotonic()
    intents: dict[str, str] = {}
    slow_groups: dict[float, list[str]] = {}
    to_cancel: dict[str, list[str]] = {
        "quick": [],
        "timed_out": [],
        "ignored_completed": [],
        "ignored_failed": [],
    }
    for pool in sorted({p.pool for p in plans}):
        api.pool(pool)
    for plan in plans:
        deployment_id = api.deployment(plan.flow, plan.deployment, plan.pool)
        fleet.total_runs += plan.completed
        api.create_runs(deployment_id, "COMPLETED", plan.workers, plan.completed)
        n = plan.quick + len(plan.slow) + plan.timed_out + plan.ignored_completed + plan.ignored_failed
        fleet.total_runs += n
        ids = iter(api.create_runs(deployment_id, "RUNNING", plan.workers, n))
        to_cancel["quick"] += [next(ids) for _ in range(plan.quick)]
        for delay in plan.slow:
            slow_groups.setdefault(delay, []).append(next(ids))
        to_cancel["timed_out"] += [next(ids) for _ in range(plan.timed_out)]
        to_cancel["ignored_completed"] += [next(ids) for _ in range(plan.ignored_completed)]
        to_cancel["ignored_failed"] += [next(ids) for _ in range(plan.ignored_failed)]
    fleet.timings["create_runs"] = round(time.monotonic() - clock, 2)
    log(f"created {fleet.total_runs} runs in {fleet.timings['create_runs']}s")

    clock = time.monotonic()
    for run_id in to_cancel["timed_out"]:
        # Where they ran: the report shows it, since their processes may still be there.
        where = f"etl-host-{int(run_id[4:6], 16) % 7}:{4000 + int(run_id[:4], 16) % 5000}"
        api.call("PATCH", f"flow_runs/{run_id}", {"infrastructure_pid": where})
    # First the runs the server times out, and its timeouts waited for on a quiet database: its
    # timeout handlers collide on SQLite's lock with any other write and retry with growing gaps
    # (fired together, or amid the server's own follow-up of ~450 other cancels, they took 66-107 s
    # after a 15 s timeout). One at a time, 0.75 s apart, for the same reason.
    for run_id in to_cancel["timed_out"]:
        api.set_states([run_id], "CANCELLING")
        time.sleep(0.75)
    intents.update(dict.fromkeys(to_cancel["timed_out"], "timed_out"))
    took = wait_until(
        lambda: (
            api.count({"id": {"any_": to_cancel["timed_out"]}, "state": {"type": {"any_": ["CANCELLING"]}}})
            == 0
        ),
        timeout_seconds + 300,
        "the server's cancelling timeout to end the timed-out runs",
        interval=1.0,
    )
    fleet.timings["server_timeouts"] = round(time.monotonic() - clock, 2)
    log(f"the server timed out {len(to_cancel['timed_out'])} runs ({took:.0f}s after the last)")

    clock = time.monotonic()
    # Each kind of cancel ends well within the server's cancelling timeout after it began: on a
    # loaded machine one step can take longer than that timeout, which then ended the runs of the
    # step before ("ignored" and "slow" runs counted as timed out).
    for start in range(0, len(to_cancel["quick"]), 50):
        chunk = to_cancel["quick"][start : start + 50]
        api.set_states(chunk, "CANCELLING")
        api.set_states(chunk, "CANCELLED")
    intents.update(dict.fromkeys(to_cancel["quick"], "quick"))
    ignored = to_cancel["ignored_completed"] + to_cancel["ignored_failed"]
    api.set_states(ignored, "CANCELLING")
    intents.update(dict.fromkeys(ignored, "ignored"))
    # Ignored: the run finishes anyway; the server accepts that only when forced.
    api.set_states(to_cancel["ignored_completed"], "COMPLETED", force=True)
    api.set_states(to_cancel["ignored_failed"], "FAILED", force=True)
    started = time.monotonic()
    slow_ids = [i for group in slow_groups.values() for i in group]
    api.set_states(slow_ids, "CANCELLING")
    intents.update(dict.fromkeys(slow_ids, "slow"))
    for delay in sorted(slow_groups):
        time.sleep(max(0.0, started + delay - time.monotonic()))
        api.set_states(slow_groups[delay], "CANCELLED")
    fleet.timings["cancel"] = round(time.monotonic() - clock, 2)
    log(f"cancelled {len(intents)} runs in {fleet.timings['cancel']}s")
    return intents


def wait_for_events(api: Api, since: str, cancels: int, cancelled: int, timeout: float = 120) -> float:
    """Until the server has stored the Cancelling events and the Cancelled events that ended them."""
    return wait_until(
        lambda: (
            api.event_total(["prefect.flow-run.Cancelling"], since) >= cancels
            and api.event_total(["prefect.flow-run.Cancelled"], since) >= cancelled
        ),
        timeout,
        f"{cancels} Cancelling events and {cancelled} Cancelled events to be stored",
        interval=1.0,
    )


# -- phase 2: the present ------------------------------------------------------------------


def seed_present(api: Api, fleet: SeededFleet, log: Callable[[str], None]) -> dict[str, str]:
    """Runs in Cancelling now (remote hosts), a held slot, a cancelled parent with live children."""
    intents: dict[str, str] = {}
    train = api.deployment("train", "gpu", "ml-pool")
    export = api.deployment("export", "s3", "k8s-pool")
    remote = api.create_runs(train, "RUNNING", ("gpu-worker-2",), 4)
    k8s = api.create_runs(export, "RUNNING", ("k8s-worker-1",), 2)
    for run_id in remote:
        api.call("PATCH", f"flow_runs/{run_id}", {"infrastructure_pid": "gpu-node-7:4242"})
        fleet.remote_stuck[run_id] = "gpu-node-7"
    for n, run_id in enumerate(k8s):
        api.call("PATCH", f"flow_runs/{run_id}", {"infrastructure_pid": f"prefect:export-s3-job-{n}"})
        fleet.remote_stuck[run_id] = "kubernetes"
    api.set_states(remote + k8s, "CANCELLING")
    intents.update(dict.fromkeys(remote + k8s, "cancelling"))

    # A deployment with a concurrency limit of 1: its run takes the slot on Pending (orchestrated,
    # as a worker's proposal is), and keeps it while it sits in Cancelling.
    api.pool("etl-pool")
    limited = api.deployment("ingest", "limited", "etl-pool", concurrency_limit=1)
    run = api.call(
        "POST", f"deployments/{limited}/create_flow_run", {"labels": {"prefect.worker.name": "etl-worker-1"}}
    )
    for state in ("PENDING", "RUNNING", "CANCELLING"):
        api.set_state(run["id"], state)
    fleet.slot_run, fleet.slot_deployment = run["id"], limited
    intents[run["id"]] = "cancelling"

    # A parent that started two sub-deployment runs (run_deployment) and was cancelled; they run on.
    report = api.deployment("report", "daily", "ml-pool")
    parent = api.create_runs(report, "RUNNING", ("gpu-worker-1",), 1)[0]
    children = []
    for n in range(2):
        task = api.call(
            "POST",
            "task_runs/",
            {
                "flow_run_id": parent,
                "task_key": "run_deployment",
                "dynamic_key": str(n),
                "name": f"run_deployment-{n}",
            },
        )
        child = api.call(
            "POST",
            f"deployments/{export}/create_flow_run",
            {"state": {"type": "RUNNING"}, "parent_task_run_id": task["id"]},
        )
        children.append(child["id"])
    api.set_state(parent, "CANCELLING")
    api.set_state(parent, "CANCELLED")
    fleet.parent_run, fleet.child_runs = parent, tuple(children)
    intents[parent] = "quick"
    intents.update(dict.fromkeys(children, "cancelling"))
    fleet.total_runs += len(remote) + len(k8s) + 1 + 1 + len(children)
    log(
        f"{len(remote) + len(k8s)} runs stuck on remote hosts, a held slot, "
        "a cancelled parent with 2 live children"
    )
    return intents


def wait_for_the_children_cancelling(api: Api, fleet: SeededFleet) -> None:
    """The server's cancellation cleanup proposes Cancelling for the cancelled parent's children
    (deployment runs are not cancelled outright): waited for, so that the history does not change
    under the tests (it takes the server 10-40 s: the demo's runs are staged meanwhile)."""
    took = wait_until(
        lambda: (
            api.count({"id": {"any_": list(fleet.child_runs)}, "state": {"type": {"any_": ["CANCELLING"]}}})
            == len(fleet.child_runs)
        ),
        120,
        "the server to propose Cancelling for the children of the cancelled parent",
        interval=1.0,
    )
    fleet.timings["children_cancelling"] = round(took, 2)


# -- the truth ---------------------------------------------------------------------------


def read_truth(api: Api, intents: dict[str, str]) -> dict[str, Truth]:
    """Each cancel as the server's state table has it (4 requests at a time)."""
    runs = {r["id"]: r for r in api.runs(sorted(intents))}
    deployments = {}
    for run in runs.values():
        if run.get("deployment_id") and run["deployment_id"] not in deployments:
            dep = api.call("GET", f"deployments/{run['deployment_id']}")
            flow = api.call("GET", f"flows/{dep['flow_id']}")
            deployments[run["deployment_id"]] = f"{flow['name']}/{dep['name']}"

    def one(run_id: str) -> Truth:
        history = api.history(run_id)
        run = runs[run_id]
        entered = next(s for s in history if s["type"] == "CANCELLING")
        end = next(
            (s for s in history if s["timestamp"] > entered["timestamp"] and s["type"] != "CANCELLING"), None
        )
        return Truth(
            run_id=run_id,
            deployment=deployments.get(run.get("deployment_id") or ""),
            pool=run.get("work_pool_name"),
            worker=(run.get("labels") or {}).get("prefect.worker.name"),
            requested_at=_parse(entered["timestamp"]),
            ended_at=_parse(end["timestamp"]) if end else None,
            end_type=end["type"] if end else None,
            end_message=end.get("message") if end else None,
            intent=intents[run_id],
        )

    with ThreadPoolExecutor(4) as pool:
        return {t.run_id: t for t in pool.map(one, sorted(intents))}


# -- the whole fixture ------------------------------------------------------------------------


@contextlib.contextmanager
def seeded_fleet(
    workdir: Path,
    log: Callable[[str], None] = print,
    scenarios: Sequence[str] = ("sleep", "orphan"),
    plans: Sequence[Plan] | None = None,
    timeout_seconds: float = 15.0,
) -> Iterator[tuple[SeededFleet, Any]]:
    """A server with the history and the present seeded, and real stuck runs; (fleet, demo environment).

    Phase 1 runs the server with a short cancelling timeout so that the server
    itself times runs out; phase 2 restarts it on the same database with the
    timeout out of reach, so that the runs stuck now stay stuck.
    """
    from prefect_cancel_doctor.demo.catalog import select
    from prefect_cancel_doctor.demo.environment import stage_scenarios
    from prefect_cancel_doctor.demo.harness import LocalPrefect

    started = time.monotonic()
    plans = list(plans if plans is not None else default_plan())
    workdir.mkdir(parents=True, exist_ok=True)
    since = datetime.now().astimezone().isoformat()
    fast_cleanup = {"PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS": "5"}
    with LocalPrefect(
        workdir=workdir, log=log, cancelling_timeout_seconds=timeout_seconds, server_env=fast_cleanup
    ) as history_server:
        api = Api(history_server.api_url)
        fleet = SeededFleet(history_server.api_url, 0)
        intents = seed_history(api, plans, fleet, log, timeout_seconds)
        cancelled = sum(1 for intent in intents.values() if intent != "ignored")
        took = wait_for_events(api, since, len(intents), cancelled)
        fleet.timings["events_stored"] = round(took, 2)
        fleet.requests += api.requests
        api.close()
    fleet.timings["phase1"] = round(time.monotonic() - started, 2)
    log(f"history seeded in {fleet.timings['phase1']}s ({fleet.requests} requests); restarting the server")

    with LocalPrefect(workdir=workdir, log=log, server_env=fast_cleanup) as server:
        clock = time.monotonic()
        api = Api(server.api_url)
        fleet.api_url = server.api_url
        intents.update(seed_present(api, fleet, log))
        environment = stage_scenarios(server, select(list(scenarios)), log) if scenarios else None
        wait_for_the_children_cancelling(api, fleet)
        for run in environment.runs if environment else ():
            intents[run.run_id] = "cancelling" if run.expected_state == "CANCELLING" else "timed_out"
            fleet.total_runs += 1
        fleet.timings["phase2"] = round(time.monotonic() - clock, 2)
        fleet.truth = read_truth(api, intents)
        cancelled = sum(1 for t in fleet.truth.values() if t.end_type == "CANCELLED")
        wait_for_events(api, since, len(fleet.truth), cancelled)
        fleet.requests += api.requests
        fleet.timings["total"] = round(time.monotonic() - started, 2)
        log("seeding timings (s): " + ", ".join(f"{k}={v}" for k, v in fleet.timings.items()))
        api.close()
        yield fleet, environment


def main(argv: Sequence[str] | None = None) -> int:
    """Seed a throw-away server and write the report in every format into OUT_DIR."""
    import argparse
    import os
    import subprocess
    import sys
    import tempfile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="pcd-history-") as tmp,
        seeded_fleet(Path(tmp), plans=default_plan(args.scale)) as (fleet, _),
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PCD_"))}
        env.update(PREFECT_API_URL=fleet.api_url, COLUMNS="100")
        for fmt, suffix in (("terminal", "txt"), ("markdown", "md"), ("html", "html"), ("json", "json")):
            command = [
                *(sys.executable, "-m", "prefect_cancel_doctor", "report", "--since", "1h", "--slow", "5s"),
                *("--format", fmt, "--output-file", str(args.out / f"report.{suffix}")),
                *("--fail-on", "stuck-older-than=15m,p95-above=30s,orphans"),
            ]
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            print(fmt, result.returncode, result.stderr.strip()[-500:])
        (args.out / "seeding.json").write_text(
            json.dumps({"timings": fleet.timings, "runs": fleet.total_runs})
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
