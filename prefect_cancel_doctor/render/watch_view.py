"""The `watch` view on a terminal: one table, redrawn in place (rich `Live`), fitted to its width.

The run (its name, then its state: "Cancelling 3m05s", or "Cancelled at 23:28:41" by the
API's clock), the cause and the blocking call's file:line are never cut; where the terminal
is narrow, the SIGTERM column goes first, then the Change column, whose news then goes under
the blocking call (`render.fit`).
"""

from __future__ import annotations

import contextlib
import enum
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rich.live import Live
from rich.table import Table

from prefect_cancel_doctor.core.durations import seconds_text
from prefect_cancel_doctor.render import fit
from prefect_cancel_doctor.render.terminal import console_for


class Change(enum.Enum):
    """What changed of a run since the previous refresh."""

    NEW = "new"
    SAME = "same"
    #: The blocking call is another (the run moves on).
    MOVED = "moved"
    #: The verdict's cause is another (a SIGTERM came, the process died, …).
    CAUSE = "new cause"
    #: This refresh could not sample the run (another debugger attached, say): the cause and
    #: call shown are the previous refresh's.
    STALE = "not sampled"
    #: The run left the scan (it left Cancelling): its cause and call are the last seen.
    GONE = "–"


#: How a change reads in a line of the log (off a terminal).
_SAID = {
    Change.NEW: "first seen",
    Change.SAME: "same call",
    Change.MOVED: "call moved",
    Change.CAUSE: "cause changed",
    Change.STALE: "not sampled this time",
    Change.GONE: "last seen in Cancelling",
}


@dataclass(frozen=True)
class Row:
    """One watched run, as of the last refresh."""

    run_id: str
    name: str
    #: Its state's name ("Cancelling", "Cancelled", …).
    state: str
    #: Seconds in Cancelling: up to now while the run is in it; once it left, up to its state's
    #: timestamp (both the API's), no longer counting. None where unknown.
    cancelling_for: float | None
    cause: str
    #: The blocking call's function ("-" without one).
    call: str
    #: Where it is: "etl.py:10", or its native frame ("" without a call).
    site: str
    change: Change
    #: What the flow process does with SIGTERM: "pending", "ignored", "handled" or "-".
    sigterm: str
    #: When the run entered Cancelling (the API's ISO time).
    cancelling_since: str | None = None
    #: The run is out of Cancelling (in `state`).
    left: bool = False
    #: When its state began, as the API says (HH:MM:SS UTC), for a run out of Cancelling.
    since: str | None = None

    @property
    def where(self) -> str:
        """ "Cancelling 3m05s", "Cancelled at 23:28:41", or the state's name where its time is unknown."""
        if not self.left:
            return f"{self.state} {seconds_text(self.cancelling_for)}"
        return f"{self.state} at {self.since}" if self.since else self.state

    @property
    def blocking(self) -> str:
        """ "time.sleep at etl.py:10"."""
        return f"{self.call} at {self.site}" if self.site else self.call

    def line(self) -> str:
        """The row as one line, for a log or a pipe; times are UTC, from the API."""
        if self.left:
            at = f"{self.state} at {self.since} UTC" if self.since else self.state
            where = f"left Cancelling: {at}" if self.cancelling_since else at
        else:
            where = self.state
        return (
            f"{self.name} ({self.run_id[:8]}) {where}; {self.cause}; {self.blocking} ({_SAID[self.change]}); "
            f"SIGTERM {self.sigterm}; in Cancelling {seconds_text(self.cancelling_for)}"
        )


_COLUMNS = (
    fit.Column("Run"),
    fit.Column("Cause"),
    fit.Column("Blocking call", cut=fit.Cut.START),
    fit.Column("Change", drop=1),
    fit.Column("SIGTERM", drop=2),
)


#: The table has no edges (two cells more for its columns).
_NO_EDGES = 2


def table(view: dict[str, Row], width: int = 120) -> Table:
    """The watched runs, fitted to `width`: those still in Cancelling first, then those that left it.

    Where the Change column does not fit, a change worth seeing (moved, new cause, not sampled)
    goes under the blocking call.
    """
    ordered = sorted(view.values(), key=lambda row: (row.left, row.name))
    cells: list[list[fit.Cell]] = []
    for row in ordered:
        run: tuple[tuple[str, str], ...] = ((row.name, ""), (row.where, "dim"))
        if row.left and row.cancelling_for is not None:
            run += ((f"after {seconds_text(row.cancelling_for)}", "dim"),)
        cells.append([run, row.cause, row.blocking, row.change.value, row.sigterm])
    if not view:
        cells.append(["none", "no run is in Cancelling", "", "", ""])
    if fit.fit(_COLUMNS, cells, width + _NO_EDGES)[3] is None:
        for row, cell in zip(ordered, cells, strict=False):
            if row.change in (Change.MOVED, Change.CAUSE, Change.STALE):
                cell[2] = (*fit.lines(cell[2]), (f"({row.change.value})", "dim"))
    styles = [("dim" if row.left else None) for row in ordered] or None
    title = "prefect-cancel-doctor watch (Ctrl-C to quit)"
    return fit.table(_COLUMNS, cells, width, title=title, show_edge=False, row_styles=styles)


@contextlib.contextmanager
def live(color: bool | None) -> Iterator[Callable[[dict[str, Row]], None]]:
    """A live table on stdout; yields the function that redraws it."""
    console = console_for(sys.stdout, color)
    with Live(table({}, console.width), console=console, auto_refresh=False) as screen:

        def show(view: dict[str, Row]) -> None:
            screen.update(table(view, console.width), refresh=True)

        yield show


__all__ = ["Change", "Row", "live", "table"]
