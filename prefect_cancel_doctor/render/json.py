"""`--format json`: the report model, serialized; never through rich."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TextIO

from prefect_cancel_doctor.model import Diagnosis, Report, samples_in_place_of_stacks
from prefect_cancel_doctor.sample.classify import is_library

#: Frames kept of a thread that runs no user code (an idle loop or pool thread of Prefect's).
LIBRARY_FRAMES_KEPT = 5


def render_json(report: Report, out: TextIO, *, samples_detail: bool = False) -> None:
    """Write the JSON document (see docs/json.md).

    By default the latest py-spy sample is written once, as the run's flat `threads`, and
    each process says how many samples were taken (`samples`) instead of repeating them;
    each thread's `frames` end at its outermost user frame (the engine's machinery below it
    is counted in `frames_omitted`). `samples_detail` keeps each process's whole series
    (`threads`, one list per sample) and every frame: ~50 KB a run at 5 samples.
    """
    if samples_detail:
        write_json(report.to_dict(), out)
        return
    document = latest_samples(report).to_dict()
    for run, diagnosis in zip(document["runs"], report.runs, strict=True):
        for thread in run.get("threads") or ():
            _trim(thread)
        if diagnosis.target is not None:  # the latest sample is the run's `threads`
            samples_in_place_of_stacks(run["target"]["processes"], diagnosis.target.processes)
    write_json(document, out)


def _trim(thread: dict[str, Any]) -> None:
    """Cut a thread's frames (innermost first) after its outermost user frame, as the terminal
    shows its stack (`scan_view.blocking_stack`); count what was cut."""
    frames = thread.get("frames") or []
    user = [i for i, frame in enumerate(frames) if not is_library(frame.get("filename") or "")]
    keep = user[-1] + 1 if user else LIBRARY_FRAMES_KEPT
    if len(frames) > keep:
        thread["frames"] = frames[:keep]
        thread["frames_omitted"] = len(frames) - keep


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
