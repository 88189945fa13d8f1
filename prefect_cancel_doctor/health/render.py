"""Renderers of the health report: `render_health` picks the format's module.

One module per format: health_terminal.py (rich), health_markdown.py,
health_html.py (pygal's charts inlined) and health_json.py (the model itself,
`HealthReport.to_dict`). The first three lay out the same format-neutral
sections (health_layout.py). Each format's module is imported only when that
format is asked for: a JSON report loads neither rich nor pygal.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TextIO

from typing_extensions import assert_never

from prefect_cancel_doctor.health.model import HealthReport
from prefect_cancel_doctor.render import HealthFormat, write_atomically


def render_health(
    report: HealthReport,
    fmt: HealthFormat,
    out: TextIO,
    *,
    color: bool | None = None,
    samples_detail: bool = False,
    all_runs: bool = False,
) -> None:
    """Write `report` to `out` in `fmt`.

    JSON: every sample's stacks with `samples_detail`; every stuck run with
    `all_runs` (else the first `model.LISTED_RUNS`, the rest counted in `omitted`).
    The other formats show `report.top` rows per table either way.
    """
    if fmt is HealthFormat.TERMINAL:
        from prefect_cancel_doctor.health.terminal import render_health_terminal

        render_health_terminal(report, out, color=color)
    elif fmt is HealthFormat.MARKDOWN:
        from prefect_cancel_doctor.health.markdown import render_health_markdown

        render_health_markdown(report, out)
    elif fmt is HealthFormat.HTML:
        from prefect_cancel_doctor.health.html import render_health_html

        render_health_html(report, out)
    elif fmt is HealthFormat.JSON:
        from prefect_cancel_doctor.health.as_json import render_health_json

        render_health_json(report, out, samples=samples_detail, all_runs=all_runs)
    else:
        assert_never(fmt)


def write_health(
    report: HealthReport,
    fmt: HealthFormat,
    path: str | Path,
    *,
    color: bool | None = None,
    samples_detail: bool = False,
    all_runs: bool = False,
) -> None:
    """Render `report` into the file `path` atomically: a temporary file beside it, then a rename.

    A reader (a web server, a dashboard) never sees a half-written report, and
    a failed run leaves the previous report in place.
    """
    buffer = io.StringIO()
    render_health(
        report,
        fmt,
        buffer,
        color=False if color is None else color,
        samples_detail=samples_detail,
        all_runs=all_runs,
    )
    write_atomically(path, buffer.getvalue())


__all__ = ["render_health", "write_health"]
