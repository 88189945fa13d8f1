"""The `watch` view on a terminal: one table, redrawn in place (rich `Live`)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rich.live import Live
from rich.table import Table

from prefect_cancel_doctor.core.durations import seconds_text
from prefect_cancel_doctor.render.terminal import console_for

_MOVED = {True: "moved", False: "same", None: "new"}


@dataclass(frozen=True)
class Row:
    """One watched run, as of the last refresh."""

    run_id: str
    name: str
    state: str
    cancelling_for: float | None
    cause: str
    call: str
    #: Whether the blocking call differs from the previous refresh's (None: first seen).
    moved: bool | None
    #: What the flow process does with SIGTERM: "pending", "ignored", "handled" or "-".
    sigterm: str
    #: When the run was first seen out of Cancelling (HH:MM:SS UTC), None while it is in it.
    left_at: str | None = None
    #: This refresh could not sample the run (another debugger attached, say): the cause and
    #: call shown are the previous refresh's.
    stale: bool = False

    def line(self) -> str:
        """The row as one line, for a log or a pipe."""
        where = f"left Cancelling at {self.left_at}: {self.state}" if self.left_at else self.state
        moved = {True: "moved", False: "same call", None: "first seen"}[self.moved]
        moved = "not sampled this time" if self.stale else moved
        return (
            f"{self.name} ({self.run_id[:8]}) {where}; {self.cause}; {self.call} ({moved}); "
            f"SIGTERM {self.sigterm}; in Cancelling {seconds_text(self.cancelling_for)}"
        )


def table(view: dict[str, Row]) -> Table:
    """The watched runs: those still in Cancelling first, then those that left it."""
    grid = Table(title="prefect-cancel-doctor watch (Ctrl-C to quit)", title_justify="left", expand=True)
    for header in ("Run", "State", "In Cancelling", "Cause", "Blocking call", "Call", "SIGTERM"):
        grid.add_column(header, no_wrap=header in ("Run", "In Cancelling", "SIGTERM"), overflow="ellipsis")
    ordered = sorted(view.values(), key=lambda row: (row.left_at is not None, row.name))
    for row in ordered:
        state = f"{row.state} at {row.left_at}" if row.left_at else row.state
        grid.add_row(
            row.name,
            state,
            seconds_text(row.cancelling_for),
            row.cause,
            row.call,
            "not sampled" if row.stale else _MOVED[row.moved],
            row.sigterm,
            style="dim" if row.left_at else None,
        )
    if not view:
        grid.add_row("none", "no run is in Cancelling", "", "", "", "", "")
    return grid


@contextlib.contextmanager
def live(color: bool | None) -> Iterator[Callable[[dict[str, Row]], None]]:
    """A live table on stdout; yields the function that redraws it."""
    with Live(table({}), console=console_for(sys.stdout, color), auto_refresh=False) as screen:

        def show(view: dict[str, Row]) -> None:
            screen.update(table(view), refresh=True)

        yield show
