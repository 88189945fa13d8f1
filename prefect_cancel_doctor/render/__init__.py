"""Renderers: one class per output format, chosen from an enum.

The enums are also the CLI's `--format` values: the CLI imports this module at
start-up, so it imports no other module of the package until it renders.
"""

from __future__ import annotations

import enum
import sys
from typing import TYPE_CHECKING, TextIO

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover - Python 3.10
    from typing_extensions import assert_never

if TYPE_CHECKING:
    from prefect_cancel_doctor.model import Report


class Format(str, enum.Enum):
    """Output formats of `scan`, `diagnose`, `inspect` and `demo`."""

    TERMINAL = "terminal"
    JSON = "json"


class HealthFormat(str, enum.Enum):
    """Output formats of `report` (rendered by `render.health`)."""

    TERMINAL = "terminal"
    MARKDOWN = "markdown"
    HTML = "html"
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
