"""Seeded Prefect databases for the fleet-scale benchmarks: 1,000, 10,000 and 50,000 flow runs.

Everything goes through the REST API of a real local server, in the server's
fastest ways: 20 process work pools with 2 workers each, 50 flows and 200
deployments on an hourly schedule; the runs are created by backfilling the
deployments' schedules (`POST /deployments/{id}/schedule`, one bulk insert per
deployment), and moved to their final states 50 at a time with
`POST /flow_runs/bulk_set_state` (forced, as a history would have them:
85 % Completed, 6 % Failed, 4 % Cancelled, 2 % Crashed, 1 % Running, 2 % left
Scheduled; the Cancelled runs go Running, Cancelling, Cancelled, as a cancel does).
Runs in CANCELLING are made RUNNING, given an `infrastructure_pid` on another
host and proposed CANCELLING one by one, as a worker and `prefect flow-run
cancel` would. The server persists the events of all these state changes,
which the health report reads. (SQLite takes one writer at a time: concurrent
writes are refused with 503, so writes are sequential.)

| size | runs in CANCELLING |
|---|---|
| 1,000 | 50 (5 %) |
| 10,000 | 500 (5 %) |
| 50,000 | 500 (1 %) |

so 10k → 50k grows the history fivefold with the same stuck runs, and 1k →
10k grows the stuck runs tenfold. The databases are built in one pass (the
1k database is a snapshot of the 10k one on its way, and so on) and cached
under ~/.cache/prefect-cancel-doctor-bench/ (or $PCD_BENCH_CACHE); a re-run
reuses them.

The API stamps every state with the time of the request, so a history seeded
in minutes would look as if every run had ended within the last hour. Each
snapshot is therefore aged, in SQL, the one thing not done through the API:
every run not in CANCELLING is moved back by a random 1 hour to 30 days
(its times, its states' and its events' alike), as a month of real history
would be. A benchmark serving a snapshot later moves all of it forward by the
time since seeding (`rebase`), so "the last 24 hours" hold the same runs.

    python -m bench.seed            # build what is missing, print the seeding time
    python -m bench.seed --force    # build again
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx

from bench._common import local_server, log
from prefect_cancel_doctor.demo.harness import LocalPrefect

SEED_VERSION = 2
#: (total runs, of which in CANCELLING), cumulative.
SIZES: tuple[tuple[int, int], ...] = ((1_000, 50), (10_000, 500), (50_000, 500))
#: The cancel-heavy series (`--cancels`): (total runs, of which cancelled within the last 7 days),
#: cumulative; 94 % of each phase's cancels are left in CANCELLING, the rest end Cancelled.
CANCEL_SIZES: tuple[tuple[int, int], ...] = ((1_250, 1_000), (6_250, 5_000), (25_000, 20_000))
CANCEL_STUCK_SHARE = 0.94
POOLS = 20
WORKERS_PER_POOL = 2
FLOWS = 50
DEPLOYMENTS = 200
#: The final states of the history (not CANCELLING), with their weights.
HISTORY_STATES = (
    ("COMPLETED", "Completed", 85),
    ("FAILED", "Failed", 6),
    ("CANCELLED", "Cancelled", 4),
    ("CRASHED", "Crashed", 2),
    ("SCHEDULED", "Scheduled", 2),
    ("RUNNING", "Running", 1),
)
#: Times moved back when a snapshot is aged (columns holding timestamps).
_RUN_TIME_COLUMNS = (
    "created",
    "updated",
    "expected_start_time",
    "next_scheduled_start_time",
    "start_time",
    "end_time",
    "state_timestamp",
)
_STATE_TIME_COLUMNS = ("created", "updated", "timestamp")
#: Every time a benchmark's view depends on, by table (moved together by `rebase`).
_TIMES = {
    "flow_run": _RUN_TIME_COLUMNS,
    "flow_run_state": _STATE_TIME_COLUMNS,
    "events": ("occurred", "received", "recorded"),
    "event_resources": ("occurred",),
    "worker": ("last_heartbeat_time",),
}


def cache_dir() -> Path:
    return Path(os.environ.get("PCD_BENCH_CACHE") or Path.home() / ".cache" / "prefect-cancel-doctor-bench")


def database_path(size: int, series: str = "") -> Path:
    """The cached snapshot of `size` runs (`series` "cancels": the cancel-heavy series)."""
    import importlib.metadata

    prefect = importlib.metadata.version("prefect")
    kind = f"-{series}" if series else ""
    return cache_dir() / f"v{SEED_VERSION}-prefect-{prefect}-{size}-runs{kind}.db"


def seeding_record(series: str = "") -> dict[str, Any]:
    """What the last seeding measured (sizes, seconds), if it was recorded."""
    kind = f"-{series}" if series else ""
    path = cache_dir() / f"v{SEED_VERSION}-seeding{kind}.json"
    try:
        record: dict[str, Any] = json.loads(path.read_text())
        return record
    except (OSError, ValueError):
        return {}


def ensure_databases(force: bool = False, series: str = "") -> dict[int, Path]:
    """The seeded databases by size, seeding them first if any is missing."""
    sizes = CANCEL_SIZES if series == "cancels" else SIZES
    paths = {size: database_path(size, series) for size, _ in sizes}
    if force or not all(_cached(path) for path in paths.values()):
        seed(paths, series)
    return paths


@dataclass
class _Fleet:
    pools: list[str]
    flows: list[str]
    #: (deployment id, flow id, pool name)
    deployments: list[tuple[str, str, str]]


def seed(paths: dict[int, Path], series: str = "") -> None:
    cancels = series == "cancels"
    sizes = CANCEL_SIZES if cancels else SIZES
    cache_dir().mkdir(parents=True, exist_ok=True)
    rng = random.Random(20240601)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with local_server(persist_events=True) as prefect:
        timings["server start"] = time.perf_counter() - started
        database = prefect.home / "prefect.db"
        api = _Api(prefect.api_url)
        try:
            step = time.perf_counter()
            fleet = _create_fleet(api)
            timings["pools, workers, flows, deployments"] = time.perf_counter() - step
            # Consecutive backfill windows, so every phase adds new runs.
            window = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(
                days=400
            )
            done, done_cancelling = 0, 0
            for size, cancelling in sizes:
                step = time.perf_counter()
                count = size - done
                if cancels:
                    _create_cancels(api, fleet, window, count, cancelling - done_cancelling, rng)
                else:
                    _create_runs(api, fleet, window, count, cancelling - done_cancelling, rng)
                window += timedelta(hours=count // len(fleet.deployments))
                done, done_cancelling = size, cancelling
                seconds = time.perf_counter() - step
                timings[f"runs {size - count + 1:,}–{size:,}"] = seconds
                log(f"seeded {size:,} runs ({count / seconds:.0f} runs/s in this phase)")
                step = time.perf_counter()
                _wait_for_events(api)
                _snapshot(database, paths[size], rng, max_age_days=6 if cancels else 30)
                timings[f"snapshot + aging at {size:,}"] = time.perf_counter() - step
        finally:
            api.close()
    timings["total"] = time.perf_counter() - started
    runs_seconds = sum(v for k, v in timings.items() if k.startswith("runs "))
    record = {
        "sizes": [list(size) for size in sizes],
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "runs_per_second": round(SIZES[-1][0] / runs_seconds, 1),
        "seeded_at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    kind = f"-{series}" if series else ""
    (cache_dir() / f"v{SEED_VERSION}-seeding{kind}.json").write_text(json.dumps(record, indent=2))


class _Api:
    """Sequential calls to the server's API, failing loudly."""

    def __init__(self, api_url: str) -> None:
        self.http = httpx.Client(base_url=api_url + "/", timeout=300)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        # The event persister writes too: SQLite then answers 503 (locked, rolled back).
        for attempt in range(10):
            response = self.http.request(method, path, json=body)
            if response.status_code != 503:
                break
            time.sleep(0.05 * 2**attempt)
        response.raise_for_status()
        return response.json() if response.content else None

    def close(self) -> None:
        self.http.close()


def _create_fleet(api: _Api) -> _Fleet:
    pools = [f"bench-pool-{index:02d}" for index in range(POOLS)]
    for pool in pools:
        api.call("POST", "work_pools/", {"name": pool, "type": "process"})
        for worker in range(WORKERS_PER_POOL):
            api.call(
                "POST",
                f"work_pools/{pool}/workers/heartbeat",
                {"name": f"{pool}-worker-{worker}", "heartbeat_interval_seconds": 30},
            )
    flows = [api.call("POST", "flows/", {"name": f"bench-flow-{index:02d}"})["id"] for index in range(FLOWS)]
    deployments = []
    for index in range(DEPLOYMENTS):
        flow, pool = flows[index % FLOWS], pools[index % POOLS]
        body = {
            "name": f"deployment-{index:03d}",
            "flow_id": flow,
            "work_pool_name": pool,
            "entrypoint": "flows.py:main",
            "path": "/opt/flows",
            "paused": False,
            "schedules": [{"schedule": {"interval": 3600}, "active": True}],
            "parameter_openapi_schema": {"type": "object", "properties": {}},
        }
        deployments.append((api.call("POST", "deployments/", body)["id"], flow, pool))
    return _Fleet(pools, flows, deployments)


def _create_runs(
    api: _Api, fleet: _Fleet, start: datetime, count: int, cancelling: int, rng: random.Random
) -> None:
    """Backfill `count` hourly runs from `start` (spread over the deployments), then set their states."""
    ids = _backfill(api, fleet, start, count)
    rng.shuffle(ids)
    stuck, history = ids[:cancelling], ids[cancelling:]
    names = [name for name, _, _ in HISTORY_STATES]
    weights = [weight for _, _, weight in HISTORY_STATES]
    by_state: dict[str, list[str]] = {}
    for run in history:
        by_state.setdefault(rng.choices(names, weights)[0], []).append(run)
    by_state.setdefault("RUNNING", []).extend(stuck)
    labels = {name: label for name, label, _ in HISTORY_STATES}
    for state, runs in by_state.items():
        if state == "SCHEDULED":
            continue
        # A cancel goes through Cancelling (that event is what the health report counts),
        # from Running: the server ends a Scheduled run's cancel at once.
        steps = [("RUNNING", "Running"), ("CANCELLING", "Cancelling")] if state == "CANCELLED" else []
        for step_type, step_name in [*steps, (state, labels[state])]:
            _bulk_state(api, runs, step_type, step_name)
    for run in stuck:
        host = f"worker-host-{rng.randrange(40):02d}"
        api.call(
            "PATCH", f"flow_runs/{run}", {"infrastructure_pid": f"{host}:{rng.randrange(1000, 4_000_000)}"}
        )
        result = api.call(
            "POST", f"flow_runs/{run}/set_state", {"state": {"type": "CANCELLING"}, "force": False}
        )
        if result["status"] != "ACCEPT":
            raise RuntimeError(f"CANCELLING not accepted for {run}: {result}")


def _backfill(api: _Api, fleet: _Fleet, start: datetime, count: int) -> list[str]:
    """Backfill `count` hourly runs from `start`, spread over the deployments: their ids."""
    per_deployment = count // len(fleet.deployments)
    end = start + timedelta(hours=per_deployment)
    ids: list[str] = []
    for deployment, _, _ in fleet.deployments:
        body = {
            "start_time": start.isoformat(),
            "end_time": end.isoformat(),
            "min_runs": per_deployment,
            "max_runs": per_deployment,
        }
        api.call("POST", f"deployments/{deployment}/schedule", body)
        window = {
            "deployments": {"id": {"any_": [deployment]}},
            "flow_runs": {
                "state": {"type": {"any_": ["SCHEDULED"]}},
                "expected_start_time": {"after_": start.isoformat(), "before_": end.isoformat()},
            },
        }
        for offset in range(0, per_deployment, 200):
            page = api.call(
                "POST", "flow_runs/filter", {**window, "limit": 200, "offset": offset, "sort": "ID_DESC"}
            )
            ids.extend(run["id"] for run in page)
    if len(ids) != per_deployment * len(fleet.deployments):
        raise RuntimeError(
            f"backfill made {len(ids)} runs, expected {per_deployment * len(fleet.deployments)}"
        )
    return ids


def _bulk_state(api: _Api, runs: list[str], state_type: str, name: str) -> None:
    for chunk in range(0, len(runs), 50):
        body = {
            "flow_runs": {"id": {"any_": runs[chunk : chunk + 50]}},
            "state": {"type": state_type, "name": name},
            "force": True,
            "limit": 50,
        }
        results = api.call("POST", "flow_runs/bulk_set_state", body)["results"]
        refused = [r for r in results if r["status"] != "ACCEPT"]
        if len(results) != len(runs[chunk : chunk + 50]) or refused:
            raise RuntimeError(f"bulk_set_state {state_type}: {len(results)} results, refused: {refused[:2]}")


def _create_cancels(
    api: _Api, fleet: _Fleet, start: datetime, count: int, cancels: int, rng: random.Random
) -> None:
    """The cancel-heavy series: `cancels` of `count` new runs go Running → Cancelling, 94 % stay there.

    The rest of the cancels end Cancelled; the other runs Completed. Everything
    is set 50 runs a request (`bulk_set_state`, forced); the runs left in
    Cancelling get an `infrastructure_pid` on another host in SQL, at the
    snapshot (`_snapshot`), as one request per run would take too long.
    """
    ids = _backfill(api, fleet, start, count)
    rng.shuffle(ids)
    cancelled, others = ids[:cancels], ids[cancels:]
    ended = cancelled[int(len(cancelled) * CANCEL_STUCK_SHARE) :]
    _bulk_state(api, others, "COMPLETED", "Completed")
    _bulk_state(api, cancelled, "RUNNING", "Running")
    _bulk_state(api, cancelled, "CANCELLING", "Cancelling")
    _bulk_state(api, ended, "CANCELLED", "Cancelled")


def _wait_for_events(api: _Api, timeout: float = 300.0) -> None:
    """Until the server has stored every event sent so far (the persister writes in batches)."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        time.sleep(3)
        total = int(api.call("POST", "events/filter", {"limit": 1})["total"])
        if total == last:
            return
        last = total
    raise RuntimeError(f"the server was still storing events after {timeout:.0f} s")


def _snapshot(database: Path, target: Path, rng: random.Random, max_age_days: int = 30) -> None:
    """Copy the live database consistently (SQLite backup), age its history, publish it atomically."""
    partial = target.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    with sqlite3.connect(database) as source, sqlite3.connect(partial) as copy:
        source.backup(copy)
    with sqlite3.connect(partial) as db:
        _age(db, rng, max_age_days)
        # Runs left in Cancelling without a process (the cancel-heavy series): one on another host.
        stuck = [
            r[0]
            for r in db.execute(
                "SELECT id FROM flow_run WHERE state_type = 'CANCELLING' AND infrastructure_pid IS NULL"
            )
        ]
        db.executemany(
            "UPDATE flow_run SET infrastructure_pid = ? WHERE id = ?",
            [(f"worker-host-{rng.randrange(40):02d}:{rng.randrange(1000, 4_000_000)}", run) for run in stuck],
        )
        db.commit()
        db.execute("PRAGMA journal_mode=DELETE")
    with sqlite3.connect(partial) as db:
        db.execute("VACUUM")
    _aged_at_path(target).write_text(json.dumps({"aged_at": time.time()}))
    shutil.move(partial, target)


def _aged_at_path(database: Path) -> Path:
    return database.with_suffix(".json")


def _cached(database: Path) -> bool:
    """Whether a snapshot is complete: the database and the time it was aged."""
    return database.exists() and _aged_at_path(database).exists()


def rebase(copy: Path, snapshot: Path) -> None:
    """Move every time in `copy` of `snapshot` forward by the time since the snapshot was aged.

    So a snapshot served days after seeding still has its month of history
    ending now, and its runs in Cancelling entered it as long ago as when seeded.
    """
    aged_at = float(json.loads(_aged_at_path(snapshot).read_text())["aged_at"])
    shift = f"+{max(0, int(time.time() - aged_at))} seconds"
    with sqlite3.connect(copy) as db:
        for table, columns in _TIMES.items():
            sets = ", ".join(f"{c} = {_shifted(c)}".replace("SHIFT", f"'{shift}'") for c in columns)
            db.execute(f"UPDATE {table} SET {sets}")
        db.commit()


def size_arguments(description: str, repeat: int, series: str = "") -> tuple[int, list[tuple[int, int]]]:
    """`--repeat` and `--sizes` of a benchmark over the seeded databases, seeded if missing.

    Returns the repeat count and the (runs, runs in Cancelling) sizes asked for
    (`series` "cancels": (runs, cancels) of the cancel-heavy series).
    """
    sizes = CANCEL_SIZES if series == "cancels" else SIZES
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--sizes", default=",".join(str(size) for size, _ in sizes))
    args = parser.parse_args()
    wanted = {int(size) for size in args.sizes.split(",")}
    paths = {size: database_path(size, series) for size, _ in sizes if size in wanted}
    if not all(_cached(path) for path in paths.values()):
        ensure_databases(series=series)
    return args.repeat, [(size, cancelling) for size, cancelling in sizes if size in wanted]


@contextlib.contextmanager
def serve(size: int, series: str = "") -> Iterator[LocalPrefect]:
    """A quiet local server on the seeded database of `size` runs, rebased to now."""
    snapshot = database_path(size, series)
    if not _cached(snapshot):
        snapshot = ensure_databases(series=series)[size]
    with local_server(snapshot, prepare=lambda copy: rebase(copy, snapshot)) as prefect:
        yield prefect


def _age(db: sqlite3.Connection, rng: random.Random, max_age_days: int = 30) -> None:
    """Move every run not in CANCELLING, its states and its events, back by 1 hour to `max_age_days`."""
    runs = [row[0] for row in db.execute("SELECT id FROM flow_run WHERE state_type != 'CANCELLING'")]
    offsets = [(f"-{rng.randrange(3600, max_age_days * 86400)} seconds", run) for run in runs]
    db.execute("CREATE TEMP TABLE age (shift TEXT, run TEXT PRIMARY KEY, resource TEXT UNIQUE)")
    db.executemany(
        "INSERT INTO age (shift, run, resource) VALUES (?, ?, ?)",
        [(shift, run, f"prefect.flow-run.{run}") for shift, run in offsets],
    )
    run_sets = ", ".join(f"{c} = {_shifted(c)}" for c in _RUN_TIME_COLUMNS)
    db.execute(
        f"UPDATE flow_run SET {run_sets.replace('SHIFT', '(SELECT shift FROM age WHERE run = flow_run.id)')} "
        "WHERE id IN (SELECT run FROM age)"
    )
    state_sets = ", ".join(f"{c} = {_shifted(c)}" for c in _STATE_TIME_COLUMNS)
    db.execute(
        f"UPDATE flow_run_state SET "
        f"{state_sets.replace('SHIFT', '(SELECT shift FROM age WHERE run = flow_run_state.flow_run_id)')} "
        "WHERE flow_run_id IN (SELECT run FROM age)"
    )
    # Its events (and their resource rows) move with it.
    event_shift = "(SELECT shift FROM age WHERE resource = events.resource_id)"
    event_sets = ", ".join(f"{c} = {_shifted(c)}" for c in _TIMES["events"])
    db.execute(
        f"UPDATE events SET {event_sets.replace('SHIFT', event_shift)} "
        "WHERE resource_id IN (SELECT resource FROM age)"
    )
    db.execute(
        "UPDATE event_resources SET occurred = (SELECT occurred FROM events WHERE events.id = event_id) "
        "WHERE event_id IN (SELECT id FROM events WHERE resource_id IN (SELECT resource FROM age))"
    )
    db.execute("DROP TABLE age")
    db.commit()


def _shifted(column: str) -> str:
    """SQL moving a stored timestamp ("2026-01-31 12:00:00.123456", UTC) back by SHIFT whole seconds."""
    return (
        f"CASE WHEN {column} IS NULL THEN NULL ELSE "
        f"strftime('%Y-%m-%d %H:%M:%S', {column}, SHIFT) || substr({column}, 20) END"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--force", action="store_true", help="seed again even if the cache has the databases")
    parser.add_argument(
        "--cancels", action="store_true", help="the cancel-heavy series (1k, 5k, 20k cancels in 7 days)"
    )
    args = parser.parse_args()
    series = "cancels" if args.cancels else ""
    paths = ensure_databases(force=args.force, series=series)
    for size, path in paths.items():
        print(f"{size:>6,} runs: {path} ({path.stat().st_size / 1e6:.0f} MB)")
    record = seeding_record(series)
    if record:
        print(
            "seeding (s):",
            json.dumps(record["seconds"], ensure_ascii=False),
            f"– {record['runs_per_second']} runs/s",
        )


if __name__ == "__main__":
    main()
