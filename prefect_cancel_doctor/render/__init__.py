"""Renderers: one class per output format, chosen from an enum.

The enums are also the CLI's `--format` values: the CLI imports this module at
start-up, so it imports no other module of the package (nor anything beyond the
standard library) until it renders.
"""

from __future__ import annotations

import contextlib
import enum
import os
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
    #: One section per run, for a ticket or a pull request (`render.markdown`).
    MARKDOWN = "markdown"
    JSON = "json"


class HealthFormat(str, enum.Enum):
    """Output formats of `report` (rendered by `health.render`)."""

    TERMINAL = "terminal"
    MARKDOWN = "markdown"
    HTML = "html"
    JSON = "json"


def render(
    report: Report, fmt: Format, out: TextIO, *, color: bool | None = None, samples_detail: bool = False
) -> None:
    """Write `report` to `out` in `fmt`.

    `samples_detail`: JSON keeps every py-spy sample of every process, not only the latest.
    """
    if fmt is Format.TERMINAL:
        from prefect_cancel_doctor.render.terminal import render_terminal

        render_terminal(report, out, color=color)
    elif fmt is Format.MARKDOWN:
        from prefect_cancel_doctor.render.markdown import render_markdown

        render_markdown(report, out)
    elif fmt is Format.JSON:
        from prefect_cancel_doctor.render.json import render_json

        render_json(report, out, samples_detail=samples_detail)
    else:
        assert_never(fmt)


def write_report(
    report: Report,
    fmt: Format,
    path: str,
    *,
    color: bool | None = None,
    samples_detail: bool = False,
) -> None:
    """Render `report` into the file `path` atomically: a temporary file beside it, then a rename.

    Nothing is written unless the whole report rendered; an earlier report at
    `path` stays in place until then. The terminal view has no colour unless forced.
    """
    import io

    buffer = io.StringIO()
    render(report, fmt, buffer, color=False if color is None else color, samples_detail=samples_detail)
    write_atomically(path, buffer.getvalue())


def write_atomically(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` through a temporary file beside it, then a rename: a reader never
    sees half a file, and a failure leaves the previous one in place. No secret the doctor holds
    is written (`redact.scrub`)."""
    import tempfile

    from prefect_cancel_doctor.core.redact import scrub

    text = scrub(text)
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
