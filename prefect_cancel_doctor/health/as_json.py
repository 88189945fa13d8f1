"""`report --format json`: the health report model, serialized; never through rich."""

from __future__ import annotations

from typing import TextIO

from prefect_cancel_doctor.health.model import HealthReport
from prefect_cancel_doctor.render.json import write_json


def render_health_json(
    report: HealthReport, out: TextIO, *, samples: bool = False, all_runs: bool = False
) -> None:
    """Write the JSON document (stuck runs use `scan`'s keys: flow_run, target, verdict).

    The sampled runs' thread stacks only with `samples`; every stuck run only with
    `all_runs`, else the first `LISTED_RUNS` and a count of the rest (see `HealthReport.to_dict`).
    """
    write_json(report.to_dict(samples=samples, all_runs=all_runs), out)
