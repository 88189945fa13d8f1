"""`--format json`: the report model, serialized; never through rich."""

from __future__ import annotations

import json
from typing import Any, TextIO

from prefect_cancel_doctor.model import Report


def render_json(report: Report, out: TextIO) -> None:
    """Write the JSON document (see README, "The JSON document")."""
    write_json(report.to_dict(), out)


def write_json(document: dict[str, Any], out: TextIO) -> None:
    """The document on one line, indented on a terminal (as `gh api` does); then a newline.

    Indenting takes json's pure-Python encoder: 80 ms instead of 8 ms for 500
    runs. Scripts and files get the compact form; `jq .` indents it.
    """
    out.write(json.dumps(document, indent=2 if out.isatty() else None))
    out.write("\n")
