"""`--format json`: the report model, serialized; never through rich."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TextIO

from prefect_cancel_doctor.model import Diagnosis, Report


def render_json(report: Report, out: TextIO, *, samples_detail: bool = False) -> None:
    """Write the JSON document (see README, "The JSON document").

    Each process's `threads` holds its latest py-spy sample only (a one-item
    list); `samples_detail` keeps the whole series, which is most of the
    document's size (~50 KB a run at 5 samples).
    """
    write_json((report if samples_detail else latest_samples(report)).to_dict(), out)


def latest_samples(report: Report) -> Report:
    """A copy of `report` whose processes keep only their latest dump (the report is not changed)."""
    return dataclasses.replace(report, runs=tuple(_latest(d) for d in report.runs))


def _latest(diagnosis: Diagnosis) -> Diagnosis:
    target = diagnosis.target
    if target is None or all(len(p.dumps) <= 1 for p in target.processes):
        return diagnosis
    processes = tuple(dataclasses.replace(p, dumps=p.dumps[-1:]) for p in target.processes)
    return dataclasses.replace(diagnosis, target=dataclasses.replace(target, processes=processes))


def write_json(document: dict[str, Any], out: TextIO) -> None:
    """The document on one line, indented on a terminal (as `gh api` does); then a newline.

    Indenting takes json's pure-Python encoder: 80 ms instead of 8 ms for 500
    runs. Scripts and files get the compact form; `jq .` indents it.
    """
    out.write(json.dumps(document, indent=2 if out.isatty() else None))
    out.write("\n")
