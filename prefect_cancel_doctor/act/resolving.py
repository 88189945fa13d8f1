"""A resolve as a person asks for it (`resolve`, `scan --resolve-orphans`): the confirmations it
needs, the runs it left unresolved, the orphans of a scan, and the grace period counted down."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prefect_cancel_doctor.act.resolve import Plan, resolve_diagnosed
from prefect_cancel_doctor.errors import ConfigurationError
from prefect_cancel_doctor.kinds.base import Wait
from prefect_cancel_doctor.model import FINAL_STATES, Diagnosis, Report

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_api import PrefectApi

PLAN_QUESTION = "Carry out this plan?"


def resolve_runs(
    diagnoses: list[Diagnosis],
    api: PrefectApi,
    *,
    yes: bool,
    interactive: bool,
    ask: Callable[[str], bool],
    dry_run: bool,
    grace: float,
    say: Callable[[str], None],
    wait: Wait,
    force_state: bool = False,
    show: Callable[[str], None] | None = None,
) -> list[str]:
    """`resolve_diagnosed`, confirmed: `yes` answers every question; else `ask(question)`, which
    needs a terminal (`interactive`; else a `ConfigurationError`, nothing done); a no raises
    `Declined`, nothing done. `force_state`: a state set on a partial view too, once confirmed on
    its own (`yes` with it: confirmed). `show`: where the plan goes (default `say`).

    The names of the runs it left unresolved (something still runs)."""

    def confirm() -> bool:
        if yes:
            return True
        if not interactive:
            raise ConfigurationError(
                "refusing to act without confirmation: stdin is not a terminal; pass --yes"
            )
        return ask(PLAN_QUESTION)

    def confirm_force(plans: list[Plan]) -> bool:
        if yes:
            return True
        names = ", ".join(plan.run_name for plan in plans)
        return ask(
            f"This doctor cannot read every process on this host (see the note above): {names} may still "
            "run in one of them. Set the state to Cancelled anyway?"
        )

    done = resolve_diagnosed(
        diagnoses,
        api,
        confirm=confirm,
        dry_run=dry_run,
        grace=grace,
        say=say,
        show=show,
        wait=wait,
        force_state=force_state,
        confirm_force=confirm_force,
    )
    return [plan.run_name for plan, outcome in done if outcome is not None and not outcome.resolved]


def split_orphans(report: Report) -> tuple[list[Diagnosis], list[Diagnosis]]:
    """A scan's runs already final (orphans: what is left of them still runs), and the rest (still in
    Cancelling)."""
    final = [d for d in report.runs if d.flow_run and d.flow_run.state_type in FINAL_STATES]
    return final, [d for d in report.runs if d not in final]


def countdown(
    what: str, seconds: float, done: Callable[[], bool], *, write: Callable[[str], None], live: bool
) -> bool:
    """Wait until `done()` or `seconds` pass; `live` (a terminal): the seconds left, redrawn in place
    with `write`, else one line saying what is awaited. Then how it ended, on the countdown's line
    ("exited after 3 s", "still running after 30 s"); nothing at all if it was done at once."""
    start = time.monotonic()
    deadline = start + seconds
    shown, drawn = -1, ""
    while not done() and time.monotonic() < deadline:
        left = math.ceil(deadline - time.monotonic())
        if live and left != shown:
            drawn = f"\r  {what}: {left:3d} s left "
            write(drawn)
        elif shown == -1:
            write(f"  {what} (up to {seconds:.0f} s)\n")
        shown = left
        time.sleep(0.2)
    finished = done()
    if shown == -1:
        return finished
    elapsed = time.monotonic() - start
    took = "within 1 s" if elapsed < 1 else f"after {elapsed:.0f} s"
    ended = f"exited {took}" if finished else f"still running after {elapsed:.0f} s"
    if live:
        line = f"\r  {what}: {ended}"
        write(line.ljust(len(drawn)) + "\n")  # over the seconds left, to the last character
    else:
        write(f"  {ended}\n")
    return finished
