"""What the scan's views (terminal, Markdown) show of a run, format-neutral: each format only lays it out.

Times read one way everywhere (`render.text`): "Cancelling 3m05s", never 185s
in one place and 3.1m in another; timestamps to the second.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect_cancel_doctor.core.remedies import RESOLVE_NOW, STOP_NOW, marks_cancelled
from prefect_cancel_doctor.model import BlockingCall, Diagnosis, Frame, StateType, Verdict
from prefect_cancel_doctor.render.text import duration_text
from prefect_cancel_doctor.sample.classify import is_library, module_of


def run_name(d: Diagnosis) -> str:
    """The run's name; the target for a process inspected without the API."""
    if d.flow_run is not None:
        return d.flow_run.name
    return d.target.description if d.target else "process"


def deployment_text(d: Diagnosis) -> str:
    """ "flow/deployment", or the flow alone; '-' without a run."""
    run = d.flow_run
    if run is None:
        return "-"
    flow = run.flow_name or "?"
    return f"{flow}/{run.deployment_name}" if run.deployment_name else flow


def state_text(d: Diagnosis) -> str:
    """ "Cancelling 3m05s" for a run in Cancelling (the time with its unit), else the state's name."""
    run = d.flow_run
    if run is None:
        return "-"
    if run.state_type == StateType.CANCELLING:
        return f"Cancelling {duration_text(run.cancelling_for_seconds)}"
    return run.state_name or run.state_type.value.title()


def call_site(call: BlockingCall | None) -> str | None:
    """ "stuck_sleep.py:20": the blocking call's file (base name) and line; None where unknown."""
    if call is None or not call.filename:
        return None
    name = call.filename.rsplit("/", 1)[-1]
    return f"{name}:{call.line}" if call.line is not None else name


def call_location(call: BlockingCall | None) -> str | None:
    """ "/full/path/stuck_sleep.py:20": the blocking call's full file path and line."""
    if call is None or not call.filename:
        return None
    return f"{call.filename}:{call.line}" if call.line is not None else call.filename


def resolve_command(verdict: Verdict) -> str | None:
    """The doctor's own command that ends the run now (`prefect-cancel-doctor resolve …`), if any."""
    first = verdict.remediation[0] if verdict.remediation else ""
    return first.removeprefix(RESOLVE_NOW).strip("`") if first.startswith(RESOLVE_NOW) else None


def fixes(verdict: Verdict) -> tuple[str, ...]:
    """The verdict's lasting fixes: without the resolve and the by-hand lines, for views that show
    them apart (`resolve_command`, `stop_now` as commands)."""
    return tuple(fix for fix in verdict.remediation if not fix.startswith((RESOLVE_NOW, STOP_NOW)))


def fix_now(d: Diagnosis) -> str:
    """What to do now, in a few words, for the summary (the panel keeps the lasting fix).

    Where the doctor has commands that end the run here (`Verdict.stop_now`), `resolve` runs
    them safely: "resolve: stop it, mark it Cancelled". Elsewhere the verdict's short fix.
    """
    commands = d.verdict.stop_now
    if not commands:
        return d.verdict.short_fix
    # The last command marks the run Cancelled when it is still Cancelling (diagnose.verdicts.stop_commands).
    marks = marks_cancelled(commands[-1])
    what = []
    if len(commands) > 1 or not marks:
        what.append("stop it")
    if marks:
        what.append("mark it Cancelled")
    return "resolve: " + ", ".join(what)


@dataclass(frozen=True)
class Stack:
    """The blocking thread's frames, innermost first, down to the outermost frame of user code."""

    #: The top native frame, where sampled (e.g. clock_nanosleep).
    native: str | None
    frames: tuple[Frame, ...]
    #: Index in `frames` of the blocking call's frame (None when it is not among them).
    marked: int | None
    #: Library frames below the last user frame, left out, and their top-level modules.
    omitted: int
    omitted_modules: tuple[str, ...]


def blocking_stack(d: Diagnosis) -> Stack | None:
    """The stack of the thread holding the blocking call, from the latest sample; None if unknown."""
    call = d.verdict.blocking_call
    if call is None or d.target is None:
        return None
    process = next((p for p in d.target.processes if p.pid == call.pid and p.dumps), None)
    if process is None:
        return None
    thread = next((t for t in process.dumps[-1] if t.thread_id == call.thread_id), None)
    if thread is None:
        return None
    frames = thread.frames
    user = [i for i, f in enumerate(frames) if not is_library(f.filename)]
    shown = frames[: user[-1] + 1] if user else frames
    marked = next(
        (i for i, f in enumerate(shown) if f.filename == call.filename and f.line == call.line), None
    )
    modules = tuple(sorted({module_of(f.filename).split(".")[0] for f in frames[len(shown) :]}))
    return Stack(call.native, shown, marked, len(frames) - len(shown), modules)


__all__ = [
    "Stack",
    "blocking_stack",
    "call_location",
    "call_site",
    "deployment_text",
    "fix_now",
    "fixes",
    "run_name",
    "state_text",
]
