"""Renderers: one class per output format, chosen from an enum."""

from __future__ import annotations

import enum
from typing import TextIO

from typing_extensions import assert_never

from prefect_cancel_doctor.model import Report


class Format(str, enum.Enum):
    """Output formats of `scan`, `diagnose` and `inspect`."""

    TERMINAL = "terminal"
    JSON = "json"


def render(report: Report, fmt: Format, out: TextIO, *, color: bool | None = None) -> None:
    """Write `report` to `out` in `fmt`."""
    if fmt is Format.TERMINAL:
        from prefect_cancel_doctor.render.terminal import render_terminal

        render_terminal(report, out, color=color)
    elif fmt is Format.JSON:
        from prefect_cancel_doctor.render.json import render_json

        render_json(report, out)
    else:
        assert_never(fmt)
