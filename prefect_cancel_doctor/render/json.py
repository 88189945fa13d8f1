"""`--format json`: the report model, serialized; never through rich."""

from __future__ import annotations

import json
from typing import Any, TextIO

from prefect_cancel_doctor.model import Report


def render_json(report: Report, out: TextIO) -> None:
    """Write the JSON document (see README, "The JSON document")."""
    write_json(report.to_dict(), out)


def write_json(document: dict[str, Any], out: TextIO) -> None:
    """Indented JSON and a newline."""
    # dumps, then one write: json.dump writes chunk by chunk, twice as slow on 500 runs.
    out.write(json.dumps(document, indent=2))
    out.write("\n")
