"""A deployment with a concurrency limit of 1, its run stuck in Cancelling: the next run waits until
the autopilot ends the stuck one. Seconds from the autopilot's verdict to the next run's start.

On a local Prefect server whose cancellation cleanup is raised to a day (as on servers before
3.7.5, or configured so: `PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_CANCELLING_TIMEOUT_SECONDS`),
a deployment limited to one run at a time (`concurrency_limit: 1`) starts a sleeping flow on a
process worker. The worker dies (SIGKILL), the run is cancelled: nothing acts on it, and its flow
engine, alive, keeps renewing the deployment's concurrency lease (Prefect 3.9 deployment
concurrency is a lease the engine renews). The next run is created; a worker of the pool starts
again (its host's service restarted it) and the next run waits, `AwaitingConcurrencySlot`. After
`--wait` seconds of that, one `agent --once --autopilot POLICY` cycle, its policy a team's that
adds `cancel_not_observed` to the safe causes: it ends the stuck run's engine and marks the run
Cancelled, which releases the slot; the next run starts.

    python -m bench.autopilot_concurrency [--wait 30]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from datetime import datetime

import httpx

from bench._common import Row, autopilot_home, log, print_table
from prefect_cancel_doctor.demo.catalog import SCENARIO_DIR
from prefect_cancel_doctor.demo.harness import LocalPrefect

HOST = "pcd-bench-slots"
POLICY = """\
name = "slots"
causes = ["cancel_not_observed", "orphaned_infrastructure", "child_process_survives", "infrastructure_gone"]
stuck_for = "0s"
grace = "5s"
"""


def _time(value: str | None) -> float:
    assert value is not None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--wait", type=float, default=30.0, help="seconds the next run waits before the cycle"
    )
    args = parser.parse_args()
    with LocalPrefect(log=log) as prefect:  # its cancellation cleanup: after a day
        flows, ready = prefect.workdir / "flows", prefect.workdir / "ready"
        flows.mkdir()
        ready.mkdir()
        (flows / "stuck_sleep.py").write_text((SCENARIO_DIR / "stuck_sleep.py").read_text())
        prefect.create_process_pool("slots")
        flow_id = prefect.client.create_flow_from_name("stuck-sleep")
        deployment = str(
            prefect.client.create_deployment(
                flow_id=flow_id,
                name="one-at-a-time",
                work_pool_name="slots",
                entrypoint="stuck_sleep.py:sleep_flow",
                path=str(flows),
                pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(flows)}}],
                enforce_parameter_schema=False,
                concurrency_limit=1,
            )
        )
        stuck = prefect.create_run(deployment, {"ready_path": str(ready / "first")})
        worker = prefect.start_worker("slots", "slots-w1")
        prefect.wait_until((ready / "first").exists, 240, "the first run to start")
        prefect.kill_worker(worker)
        prefect.cancel_run(stuck)
        prefect.wait_for_state(stuck, ["CANCELLING"], 30)
        log("the first run is stuck in Cancelling, its worker dead, its engine alive")
        following = prefect.create_run(deployment, {"ready_path": str(ready / "next")})
        prefect.start_worker("slots", "slots-w1")  # restarted under the same name, as a service would
        waited_from = time.time()
        time.sleep(args.wait)
        waiting = prefect.read_run(following).state
        assert waiting is not None
        waiting_state = f"{waiting.type.value} ({waiting.name})"
        assert waiting.type.value == "SCHEDULED", f"the next run did not wait: {waiting_state}"
        log(f"after {args.wait:g} s the next run is still {waiting_state}; one autopilot cycle now")
        with autopilot_home("pcd-bench-slots-", prefect.api_url, HOST, POLICY) as (policy, env):
            argv = [
                sys.executable,
                "-m",
                "prefect_cancel_doctor",
                "agent",
                "--once",
                "--autopilot",
                str(policy),
            ]
            cycle_start = time.time()
            done = subprocess.run(
                [*argv, "--samples", "1"], env=env, capture_output=True, text=True, timeout=300
            )
            cycle_end = time.time()
            log(done.stderr.strip().splitlines()[-2] if done.stderr.strip() else "(no output)")
        prefect.wait_for_state(following, ["RUNNING"], 180)
        run = prefect.read_run(following)
        assert run.start_time is not None
        started = run.start_time.timestamp()
        events = httpx.post(
            f"{prefect.api_url}/events/filter",
            json={
                "filter": {
                    "event": {"name": ["prefect-cancel-doctor.resolved"]},
                    "related": {"id": [f"prefect.flow-run.{stuck}"]},
                }
            },
            timeout=30,
        ).json()["events"]
        resolved_at = _time(events[0]["occurred"]) if events else cycle_end
        first_state = prefect.state_type(stuck)
    rows = [
        Row("seconds from the autopilot's event to the next run's start", started - resolved_at, None, "s"),
        Row("seconds from the cycle's start to the next run's start", started - cycle_start, None, "s"),
        Row("seconds the next run waited", started - waited_from, None, "s"),
    ]
    notes = [
        f"the next run waited {args.wait:g} s ({waiting_state}) behind the stuck run before the cycle; "
        f"the cycle (`agent --once`: scan, act, publish) took {cycle_end - cycle_start:.1f} s; the stuck run "
        f"ended {first_state}",
        "a run waiting for a deployment's slot tries again every 30 s (the server's "
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS), and its worker polls every 2 s here "
        "(PREFECT_WORKER_QUERY_SECONDS): the slot released at the autopilot's event is taken at the next "
        "try, 0-30 s later",
    ]
    print_table("deployment concurrency 1, its run stuck in Cancelling, ended by the autopilot", rows, notes)


if __name__ == "__main__":
    main()
