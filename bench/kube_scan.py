"""What a scan of 20 stuck pods costs, in each attach mode (fixture Kubernetes API over Docker).

20 runs stuck in pods (`demo.kube_harness`, scenario `kube_no_runner`: the engine
as PID 1 sleeps, no Runner), behind the fixture API server (HTTPS, a token), on a
local Prefect server. Each figure is the wall time of `prefect-cancel-doctor scan
--format json` (a subprocess, as an operator runs it; 5 samples per process):

- node mode (`PCD_KUBE_ATTACH=node`): Job, pods, events and node read from the API,
  host PIDs found through /proc/*/cgroup, sampled with py-spy from here;
- ephemeral mode, first scan: one ephemeral container added to each pod (a dry run,
  then the patch; all of them first), then all waited on together (one list of the
  pods a poll) and each read through pods/log once it runs;
- ephemeral mode, later scans: the running ephemeral containers are reused
  (each waits for its container's next round, every 10 s).

    python -m bench.kube_scan [--pods 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

from bench._common import DOCTOR, Row, compile_bytecode, log, median, print_table
from prefect_cancel_doctor.demo.kube_harness import kube_demo_environment


def _scan(env: dict[str, str]) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    result = subprocess.run(
        [DOCTOR, "scan", "--format", "json"], env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 1:
        raise RuntimeError(f"scan exited {result.returncode}: {result.stderr[-2000:]}")
    causes: dict[str, int] = {}
    for run in json.loads(result.stdout)["runs"]:
        key = f"{run['verdict']['cause']}/{(run['target'].get('pod') or {}).get('attach')}"
        causes[key] = causes.get(key, 0) + 1
    return elapsed, causes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    compile_bytecode()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with kube_demo_environment(["kube_no_runner"], log=log, copies=args.pods) as staged:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PCD_"))}
        node_env = {**base, **staged.env(attach="node")}
        ephemeral_env = {**base, **staged.env(attach="ephemeral")}
        _scan(node_env)  # warm-up: the first start of the CLI, the server's caches
        node = []
        for _ in range(args.repeat):
            seconds, node_causes = _scan(node_env)
            node.append(seconds)
        first, first_causes = _scan(ephemeral_env)
        reused = []
        for _ in range(args.repeat):
            seconds, reused_causes = _scan(ephemeral_env)
            reused.append(seconds)
    rows = [
        Row(f"scan of {args.pods} pods, node mode, median of {args.repeat}", median(node), None, "s"),
        Row(
            f"scan of {args.pods} pods, ephemeral mode, first (adds {args.pods} ephemeral containers)",
            first,
            None,
            "s",
        ),
        Row(
            f"scan of {args.pods} pods, ephemeral mode, reusing them, median of {args.repeat}",
            median(reused),
            None,
            "s",
        ),
    ]
    notes = [
        f"load average (1/5/15 min) before staging: {' / '.join(load_before)}",
        f"node scans: {', '.join(f'{s:.2f}' for s in node)} s; verdicts {node_causes}",
        f"ephemeral scans: first {first:.2f} s ({first_causes}); "
        f"reused {', '.join(f'{s:.2f}' for s in reused)} s ({reused_causes})",
        "each ephemeral container samples every 10 s; a reusing scan reads its latest round when it began "
        "within the last 15 s, else waits for the next",
    ]
    print_table(f"Kubernetes: a scan of {args.pods} stuck pods", rows, notes)


if __name__ == "__main__":
    main()
