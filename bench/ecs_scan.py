"""What a scan of 20 runs stuck in ECS tasks costs, against reading the same tasks with boto3 alone.

20 runs (split over 2 clusters) on a local Prefect server, each Cancelling with prefect-aws's
`infrastructure_pid` ("<cluster>::<task ARN>") of a Fargate task in moto's ECS (server mode, in
this process, so that the DescribeTasks calls the doctor makes are counted). Figures:

- `prefect-cancel-doctor scan --format json` (a subprocess, as an operator runs it): wall time,
  and the DescribeTasks calls it made (the goal: one per cluster per 100 tasks);
- the floor: a Python process that imports boto3 and describes the same tasks, one
  DescribeTasks per cluster, nothing else;
- `import boto3` alone, which a scan pays only when it has an ECS run.

    python -m bench.ecs_scan [--runs 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench._common import DOCTOR, Row, compile_bytecode, log, median, print_table
from prefect_cancel_doctor.demo.ecs_harness import ACCOUNT, FLOW, REGION, moto_ecs_server
from prefect_cancel_doctor.demo.harness import LocalPrefect

CLUSTERS = ("prefect-prod", "prefect-batch")

#: The floor: boto3 describing the tasks, one call per cluster (the doctor's batching, without the doctor).
FLOOR = """
import json, os, sys, boto3
ecs = boto3.client("ecs", region_name=os.environ["AWS_REGION"])
for cluster, arns in json.loads(sys.argv[1]).items():
    ecs.describe_tasks(cluster=cluster, tasks=arns)
"""


def _timed(argv: list[str], env: dict[str, str], ok: int) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != ok:
        raise RuntimeError(f"{argv[:3]} exited {done.returncode}: {done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    compile_bytecode()
    from prefect.client.schemas.actions import WorkPoolCreate

    # moto in this process, so that the DescribeTasks calls the doctor makes are counted; no EC2 here.
    with (
        moto_ecs_server(clusters=CLUSTERS, container_instance=False) as moto,
        tempfile.TemporaryDirectory() as directory,
        LocalPrefect(log=log) as prefect,
    ):
        ecs, calls = moto.client(), moto.describe_calls
        tasks: dict[str, list[str]] = {cluster: [] for cluster in CLUSTERS}
        Path(directory, "flow.py").write_text(FLOW)
        prefect.client.create_work_pool(WorkPoolCreate(name="ecs", type="ecs", base_job_template={}))
        deployment = prefect.deploy(
            flow_name="etl", entrypoint="flow.py:etl", directory=Path(directory), pool="ecs"
        )
        for index in range(args.runs):
            cluster = CLUSTERS[index % len(CLUSTERS)]
            run_id = prefect.create_run(deployment, {})
            answer = ecs.run_task(cluster=cluster, taskDefinition=moto.task_definition, launchType="FARGATE")
            arn = str(answer["tasks"][0]["taskArn"])
            tasks[cluster].append(arn)
            prefect.force_state(run_id, "PENDING")
            prefect.force_state(run_id, "RUNNING")
            prefect.client.update_flow_run(uuid.UUID(run_id), infrastructure_pid=f"{cluster}::{arn}")
            prefect.cancel_run(run_id)
        calls.clear()
        env = moto.env(PREFECT_API_URL=prefect.api_url)
        scan = [DOCTOR, "scan", "--format", "json"]
        floor = [sys.executable, "-c", FLOOR, json.dumps(tasks)]
        _timed(scan, env, 1)  # warm-up: the first start of the CLI, the server's caches
        scans, floors, imports, per_scan = [], [], [], []
        for _ in range(args.repeat):
            before = len(calls)
            scans.append(_timed(scan, env, 1))
            per_scan.append(len(calls) - before)
            floors.append(_timed(floor, env, 0))
            imports.append(_timed([sys.executable, "-c", "import boto3"], env, 0))
    scan_s, floor_s = median(scans), median(floors)
    what = f"scan of {args.runs} ECS runs in {len(CLUSTERS)} clusters, median of {args.repeat}"
    rows = [
        Row(what, scan_s, floor_s, "s", baseline_name="boto3 alone"),
        Row("DescribeTasks calls per scan", float(max(per_scan)), float(len(CLUSTERS)), "calls",
            "one per cluster", max(per_scan) <= len(CLUSTERS), "one per cluster"),
        Row("`import boto3` (paid only by a scan with an ECS run)", median(imports), None, "s"),
    ]  # fmt: skip
    notes = [
        f"scans {', '.join(f'{s:.2f}' for s in scans)} s; the floor (boto3 describing the same tasks, "
        f"one call per cluster) {', '.join(f'{s:.2f}' for s in floors)} s; DescribeTasks per scan {per_scan}",
        f"moto's ECS in server mode on 127.0.0.1 ({ACCOUNT}, {REGION}); Fargate tasks: nothing to sample",
    ]
    print_table(f"ECS: a scan of {args.runs} runs in ECS tasks", rows, notes)


if __name__ == "__main__":
    main()
