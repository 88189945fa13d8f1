"""The JSON document's size per run: the default (lean) against `--samples-detail` (everything).

The demo's default scenarios, staged for real on a local server (`run_demo_environment`),
scanned once in process as `scan` does (5 samples), and rendered both ways. Each run's size
is its entry in the compact document (`json.dumps` with the separators `write_json` uses for a
file or a pipe).

    python -m bench.json_size
"""

from __future__ import annotations

import argparse
import io
import json

from bench._common import Row, log, print_table
from prefect_cancel_doctor.clients.prefect_api import PrefectApi
from prefect_cancel_doctor.clients.settings import resolve_connection
from prefect_cancel_doctor.demo.environment import run_demo_environment
from prefect_cancel_doctor.render.json import render_json
from prefect_cancel_doctor.scan.engine import Options, scan

GOAL_KB = 20.0


def _sizes(document: str) -> list[float]:
    return [len(json.dumps(run, separators=(", ", ": "))) / 1000 for run in json.loads(document)["runs"]]


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with (
        run_demo_environment(None, log) as staged,
        PrefectApi(resolve_connection(staged.harness.api_url)) as api,
    ):
        report = scan(api, Options())
    lean, detail = io.StringIO(), io.StringIO()
    render_json(report, lean)
    render_json(report, detail, samples_detail=True)
    ours, everything = _sizes(lean.getvalue()), _sizes(detail.getvalue())
    rows = [
        Row("largest run (KB)", max(ours), max(everything), "KB", f"≤ {GOAL_KB:g} KB", max(ours) <= GOAL_KB),
        Row("median run (KB)", sorted(ours)[len(ours) // 2], sorted(everything)[len(everything) // 2], "KB"),
        Row("whole document (KB)", len(lean.getvalue()) / 1000, len(detail.getvalue()) / 1000, "KB"),
    ]
    notes = [
        f"{len(ours)} runs; baseline: the same report with `--samples-detail` (every sample, every frame)",
        "per run, default: " + ", ".join(f"{size:.1f}" for size in ours) + " KB",
    ]
    print_table("JSON per run", rows, notes)


if __name__ == "__main__":
    main()
