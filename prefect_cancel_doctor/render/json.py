"""`--format json`: the report model, serialized; never through rich."""

from __future__ import annotations

import json
from typing import TextIO

from prefect_cancel_doctor.model import Report


def render_json(report: Report, out: TextIO) -> None:
    """Write the JSON document (see README, "The JSON document")."""
    json.dump(report.to_dict(), out, indent=2)
    out.write("\n")
