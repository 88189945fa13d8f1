"""A run's Markdown artifact: its verdict, what the autopilot did about it, how to resolve it from the
UI, under who diagnosed it where; one key a run (`artifact_key`), replaced in place by later scans."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from prefect_cancel_doctor import __version__
from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.core.redact import redact_url_passwords
from prefect_cancel_doctor.model import Diagnosis, Report

#: A run's artifact at most this many characters (the stack is cut first: it comes last).
MAX_ARTIFACT_CHARS = 60_000
#: Prefect's artifact keys: lowercase letters, digits and dashes (prefect/types/names.py).
ARTIFACT_KEY = re.compile(r"^[a-z0-9-]+$")
#: Characters of one sentence of text published (a verdict's summary, a fact).
SENTENCE = 400


def text_of(value: object, limit: int = SENTENCE) -> str:
    """Text published: inert, cut to `limit`, URL passwords hidden once more."""
    return redact_url_passwords(visible(str(value), limit))


def artifact_key(run_id: str) -> str:
    """The key of a run's artifact, the same from every scan and host: `cancel-doctor-` and the
    run id's first 12 hex digits (`cancel-doctor-d4cd0485-bf3d`), short enough for the UI's cards.

    48 bits: two runs of a fleet share a key about once in 2^24 runs squared; even then each
    artifact stays on its own run (`flow_run_id`), and a run's update never touches the other's.
    """
    return "cancel-doctor-" + re.sub(r"[^a-z0-9-]", "-", run_id.lower()[:13]).strip("-")


def artifact_markdown(
    d: Diagnosis,
    host: str,
    api_url: str | None,
    generated_at: str,
    notes: Sequence[str] = (),
    agent_deployment: str | None = None,
) -> str:
    """The run's section of the Markdown report (render/markdown.py), under who diagnosed it where
    (and, with `agent_deployment`, how to resolve it from the UI); then `notes`, what the autopilot
    did about it (one line each)."""
    from prefect_cancel_doctor.render.markdown import code, markdown_lines, text

    lines = markdown_lines(Report(api_url, generated_at, (d,)))
    start = next((i for i, line in enumerate(lines) if line.startswith("## ")), 0)
    head = [
        f"# Why this run has not cancelled: {code(d.verdict.cause.value)}",
        "",
        f"Diagnosed by prefect-cancel-doctor {text(__version__)} on host {code(host)} at "
        f"{text(generated_at[:19].replace('T', ' '))} UTC; replaced by the next scan that publishes.",
        "",
    ]
    run = d.flow_run
    if agent_deployment and run is not None and d.verdict.cause.allows_action:
        head += [
            f"**Resolve it from the Prefect UI**: run the deployment {code(agent_deployment)} (*Run*, "
            f"*Custom run*) with the parameter {code('resolve')} = {code(run.id)}: the agent on host "
            f"{code(host)} re-diagnoses the run and ends it as `resolve` does, with the autopilot's checks.",
            "",
        ]
    # What the autopilot did comes first: the stack, last, is what a long artifact loses.
    autopilot = (
        ["## Autopilot", "", *(f"- {text(text_of(note, 2000))}" for note in notes[:20]), ""] if notes else []
    )
    return _cut("\n".join(head + autopilot + lines[start:]), MAX_ARTIFACT_CHARS)


def _cut(markdown: str, limit: int) -> str:
    """`markdown` cut at a line to `limit` characters, an open code block closed."""
    if len(markdown) <= limit:
        return markdown
    kept: list[str] = []
    size = 0
    fence: str | None = None
    for line in markdown.splitlines():
        if size + len(line) + 1 > limit - 200:
            break
        kept.append(line)
        size += len(line) + 1
        stripped = line.strip()
        if stripped.startswith("```"):
            ticks = stripped[: len(stripped) - len(stripped.lstrip("`"))]
            if fence is None:
                fence = ticks
            elif stripped == fence:
                fence = None
    if fence is not None:
        kept.append(fence)
    kept += ["", "… cut to stay small; `prefect-cancel-doctor diagnose` shows the rest."]
    return "\n".join(kept)


def artifact_body(
    d: Diagnosis,
    host: str,
    api_url: str | None,
    generated_at: str,
    notes: Sequence[str] = (),
    agent_deployment: str | None = None,
) -> dict[str, Any]:
    """The body of `POST /artifacts/` for the run's Markdown artifact."""
    run = d.flow_run
    assert run is not None
    return {
        "key": artifact_key(run.id),
        "type": "markdown",
        "data": artifact_markdown(d, host, api_url, generated_at, notes, agent_deployment),
        "description": text_of(f"{d.verdict.cause.value}: diagnosed by prefect-cancel-doctor on {host}", 200),
        "flow_run_id": run.id,
    }
