"""Rows an orphan writes after its run was marked Cancelled: with the autopilot, and without.

A flow that writes a row to a SQLite file every 50 ms (tests/fleet/autopilot_flows/writer.py)
runs twice on a local Prefect server, each run in its own process work pool. Both workers are
killed (SIGKILL: they crashed), both runs are cancelled and then marked Cancelled as the
server's cancellation timeout does: two orphans, each writing on. `prefect-cancel-doctor agent
--autopilot POLICY --interval I` then serves on this host, its policy the safe policy's causes
without its 10-minute wait (`stuck_for = "0s"`), for the first pool only: the second orphan is
the same orphan without the autopilot. After `--watch` seconds: the rows each wrote after its
run was Cancelled, when the first wrote its last, and the agent cycle that ended it.

    python -m bench.autopilot [--interval 20s] [--watch 60]

With the built-in `safe` policy the orphan is ended by the first cycle after it has been stuck
10 minutes (the time it entered Cancelling, as the server's timeout starts counting): add 10
minutes of rows at the rate below.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

from bench._common import REPO, Row, autopilot_home, log, print_table
from prefect_cancel_doctor.core.durations import parse_duration
from prefect_cancel_doctor.demo.harness import CANCELLING_TIMEOUT_MESSAGE, LocalPrefect

WRITER = REPO / "tests" / "fleet" / "autopilot_flows" / "writer.py"
HOST = "pcd-bench-autopilot"
POLICY = """\
name = "bench"
causes = ["orphaned_infrastructure", "child_process_survives", "infrastructure_gone", "never_started"]
stuck_for = "0s"
grace = "5s"
work_pools = ["with-autopilot"]
"""


def _rows(database: Path, since: float) -> tuple[int, float]:
    """Rows stamped after `since`, and the newest row's time."""
    with contextlib.closing(sqlite3.connect(database, timeout=10)) as db:
        count, last = db.execute("SELECT count(*), max(at) FROM rows WHERE at > ?", (since,)).fetchone()
    return int(count), float(last or since)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", default="20s", help="the agent's --interval (10s at least)")
    parser.add_argument("--watch", type=float, default=60.0, help="seconds to watch after the agent starts")
    args = parser.parse_args()
    interval = parse_duration(args.interval).total_seconds()
    with LocalPrefect(log=log) as prefect:
        flows, ready = prefect.workdir / "flows", prefect.workdir / "ready"
        flows.mkdir()
        ready.mkdir()
        (flows / "writer.py").write_text(WRITER.read_text())
        runs, databases, workers = {}, {}, []
        for pool in ("with-autopilot", "without"):
            prefect.create_process_pool(pool)
            deployment = prefect.deploy(
                flow_name="autopilot-writer",
                entrypoint="writer.py:writer_flow",
                directory=flows,
                pool=pool,
                name=pool,
            )
            databases[pool] = prefect.workdir / f"{pool}.sqlite"
            runs[pool] = prefect.create_run(
                deployment, {"ready_path": str(ready / pool), "database": str(databases[pool])}
            )
            workers.append(prefect.start_worker(pool, f"{pool}-w1"))
        prefect.wait_until(
            lambda: all((ready / pool).exists() for pool in runs), 240, "both writers to start"
        )
        for worker in workers:
            prefect.kill_worker(worker)
        cancelled = {}
        for pool, run_id in runs.items():
            prefect.cancel_run(run_id)
            prefect.wait_for_state(run_id, ["CANCELLING"], 30)
            prefect.force_state(run_id, "CANCELLED", CANCELLING_TIMEOUT_MESSAGE)
            state = prefect.read_run(run_id).state
            assert state is not None and state.timestamp is not None
            cancelled[pool] = state.timestamp.timestamp()
        log("two orphans: both runs Cancelled, both writers writing on")
        with autopilot_home("pcd-bench-autopilot-", prefect.api_url, HOST, POLICY) as (policy, env):
            argv = [sys.executable, "-m", "prefect_cancel_doctor", "agent", "--autopilot", str(policy)]
            argv += ["--interval", args.interval, "--samples", "1"]
            with (prefect.logs_dir / "agent.log").open("wb") as out:
                agent = subprocess.Popen(
                    argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            started = time.time()
            ended_at: float | None = None
            try:
                while time.time() - started < args.watch:
                    if ended_at is None and not prefect.run_processes(runs["with-autopilot"]):
                        ended_at = time.time()
                        log(f"the orphan with the autopilot is gone, {ended_at - started:.1f} s in")
                    time.sleep(0.5)
            finally:
                os.killpg(agent.pid, signal.SIGINT)
                try:
                    agent.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(agent.pid, signal.SIGKILL)
        with_rows, last = _rows(databases["with-autopilot"], cancelled["with-autopilot"])
        without_rows, _ = _rows(databases["without"], cancelled["without"])
        still = bool(prefect.run_processes(runs["without"]))
        cycles = httpx.post(
            f"{prefect.api_url}/flow_runs/filter",
            json={"deployments": {"name": {"any_": [HOST]}}},
            timeout=30,
        ).json()
        starts = sorted(r["start_time"] for r in cycles if r.get("start_time"))
    watched = time.time() - min(cancelled.values())
    first = datetime.fromisoformat(starts[0].replace("Z", "+00:00")).timestamp() if starts else None
    rate = without_rows / watched if watched else 0.0
    rows = [
        Row(
            "rows written after Cancelled, with the autopilot",
            with_rows,
            without_rows,
            "rows",
            baseline_name="without",
        ),
        Row(
            "seconds from Cancelled to the orphan's last row, with the autopilot",
            last - cancelled["with-autopilot"],
            watched,
            "s",
            baseline_name="without: still writing",
        ),
    ]
    notes = [
        f"agent --interval {interval:g} s, watched {args.watch:g} s after it started; the writer's rate "
        f"{rate:.1f} rows/s; the orphan without the autopilot still runs at the end: {still}",
        (
            f"the orphan with the autopilot ended {ended_at - started:.1f} s after the agent started"
            if ended_at is not None
            else "the orphan with the autopilot was not ended while watched"
        )
        + f"; agent cycles that ran: {len(starts)}"
        + (
            f"; the orphan's last row {last - first:.1f} s after the first cycle started (serving: the "
            f"deployment registered, its first scheduled run picked up, {first - started:.1f} s)"
            if first is not None
            else ""
        ),
        "with the built-in safe policy (10 minutes stuck first), add about "
        f"{rate * 600:.0f} rows (10 minutes at this rate) to the autopilot's figure",
    ]
    print_table("the autopilot and an orphan writing rows", rows, notes)


if __name__ == "__main__":
    main()
