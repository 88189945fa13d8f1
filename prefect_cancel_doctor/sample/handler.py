"""The interpreter's SIGTERM state as the model holds it: read here, or parsed from a probe.

proc/interpreter.py reads CPython's `Handlers[SIGTERM]` (stdlib only, so that it can
also run inside a sidecar with the target's own interpreter). This module turns what it
reads into `SigtermHandler`, with the names the target chose made inert
(`f.__qualname__ = "\\x1b]52;..."`), and parses the probe's JSON, which comes from an
interpreter the doctor does not control and is read as untrusted input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prefect_cancel_doctor.core.inert import visible_or_none
from prefect_cancel_doctor.model import HandlerKind, SigtermHandler
from prefect_cancel_doctor.proc import interpreter

if TYPE_CHECKING:
    from prefect_cancel_doctor.proc.procfs import PathLike

_KINDS = {kind.value: kind for kind in HandlerKind}


def sigterm_handler(pid: int, proc_root: PathLike = "/proc") -> SigtermHandler | None:
    """The Python-level SIGTERM handler of the interpreter of `pid`, or None when that cannot
    be read (version, stripped build, permissions, process gone, a torn read)."""
    return sigterm_state(pid, proc_root)[1]


def sigterm_state(pid: int, proc_root: PathLike = "/proc") -> tuple[bool | None, SigtermHandler | None]:
    """(the pending flag, the installed handler) of the interpreter of `pid`, read together."""
    pending, found = interpreter.read_sigterm(pid, proc_root)
    return pending, None if found is None else _model(found._asdict())


@dataclass(frozen=True)
class Probe:
    """What `interpreter.probe` read inside the target's namespace, checked and bounded."""

    pending: bool | None = None
    handler: SigtermHandler | None = None
    #: path → text of the user-code files of the dump (as the target could read them).
    sources: Mapping[str, str] = field(default_factory=dict)


def parse_probe(text: str) -> Probe | None:
    """The probe's output (one JSON object), or None when it is not what `interpreter.probe`
    prints (an interpreter too old or too new for it, a hostile image's `python`)."""
    try:
        record = json.loads(text.strip().splitlines()[-1]) if text.strip() else None
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    pending, raw, sources = record.get("pending"), record.get("handler"), record.get("sources")
    kept: dict[str, str] = {}
    for path, source in sources.items() if isinstance(sources, dict) else ():
        if len(kept) < interpreter.SOURCE_FILES and isinstance(source, str):
            kept[path] = source[: interpreter.SOURCE_BYTES]
    return Probe(
        pending if isinstance(pending, bool) else None,
        _model(raw) if isinstance(raw, dict) else None,
        kept,
    )


def _model(raw: Mapping[str, object]) -> SigtermHandler | None:
    name = raw.get("kind")
    kind = _KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        return None
    line = raw.get("line")
    return SigtermHandler(
        kind,
        qualname=_text(raw.get("qualname")),
        filename=_text(raw.get("filename")),
        line=line if type(line) is int else None,
    )


def _text(value: object) -> str | None:
    return visible_or_none(value) if isinstance(value, str) else None


__all__ = ["Probe", "parse_probe", "sigterm_handler", "sigterm_state"]
