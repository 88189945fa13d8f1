"""`report --format json`: the health report model, serialized; never through rich."""

from __future__ import annotations

import json
from typing import TextIO

from prefect_cancel_doctor.health import HealthReport


def render_health_json(report: HealthReport, out: TextIO) -> None:
    """Write the JSON document (stuck runs use `scan`'s keys: flow_run, target, verdict)."""
    json.dump(report.to_dict(), out, indent=2)
    out.write("\n")
