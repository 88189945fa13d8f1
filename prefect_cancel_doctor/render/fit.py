"""A table fitted to a terminal's width: columns dropped by priority, words shortened, never split.

Rich, left to itself, folds a word too long for its cell over two lines ("cancelle / d",
"sqlite3.Cursor.e / xecute"). Here each column is given a width before rich lays the table
out: never narrower than its header's longest word, nor than the words it must keep whole
(`Cut.NEVER`: run names, causes, dates); a word that may be shortened is cut with "…" to
fit (`Cut.END`, or `Cut.START`, which keeps a call site's file:line). When even those
widths do not fit, the columns with the highest `drop` go first, one at a time; columns
with `drop` 0 always stay. Cells wrap only at spaces.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich import box as boxes
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text, TextType


class Cut(enum.Enum):
    """How a word too wide for its column is shortened."""

    #: Never: the column is as wide as its widest word (names, causes, dates, numbers).
    NEVER = "never"
    #: At its end: "significant-w…".
    END = "end"
    #: At its start, never into its last part: "…/stuck_sleep.py:20" keeps the file:line,
    #: "…Cursor.execute" the function's own name.
    START = "start"


@dataclass(frozen=True)
class Column:
    """A column of a fitted table."""

    header: str
    #: When the table does not fit, columns go in decreasing `drop` order; 0: always shown.
    drop: int = 0
    cut: Cut = Cut.NEVER
    justify: Literal["left", "right"] = "left"
    #: The style of every cell of the column ("" for none).
    style: str = ""


#: A cell: text (one line, wrapped at spaces), or lines of (text, style).
Cell = str | tuple[tuple[str, str], ...]

#: A word cut at its end keeps at least this many cells, "…" included.
SHORTEST = 8
#: A file:line at a word's end ("stuck_sleep.py:20", "(db.py:27)", "host-1:4242"): never cut.
_SITE = re.compile(r"[^/\s]+:\d+\)?$")


def table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    width: int,
    *,
    title: TextType | None = None,
    box: boxes.Box = boxes.SIMPLE_HEAD,
    show_edge: bool = True,
    row_styles: Sequence[str | None] | None = None,
) -> Table:
    """A rich table of `rows` that fits in `width` cells (edges and padding included).

    Without edges (`show_edge=False`) the columns have two cells more: call `fit` with `width + 2`
    to know what is dropped.
    """
    widths = fit(columns, rows, width if show_edge else width + 2)  # no edges: 2 cells more for columns
    grid = Table(box=box, title=title, title_justify="left", show_edge=show_edge)
    kept = [i for i, w in enumerate(widths) if w is not None]
    for i in kept:
        column = columns[i]
        grid.add_column(
            column.header, width=widths[i], justify=column.justify, overflow="ellipsis", style=column.style
        )
    for index, row in enumerate(rows):
        cells = [_text(row[i], widths[i] or 1, columns[i].cut) for i in kept]
        grid.add_row(*cells, style=row_styles[index] if row_styles else None)
    return grid


def fit(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int) -> list[int | None]:
    """Each column's width for a table of `width` cells; None for a column dropped."""
    mins = [_least(column, [row[i] for row in rows]) for i, column in enumerate(columns)]
    wants = [
        max(m, *(cell_len(line) for row in rows for line, _ in lines(row[i])), 0) for i, m in enumerate(mins)
    ]
    kept = list(range(len(columns)))

    def total(sizes: Sequence[int]) -> int:
        return sum(sizes) + 3 * len(sizes) + 1  # padding of 1 each side, edges and dividers

    while total([mins[i] for i in kept]) > width:
        droppable = [i for i in kept if columns[i].drop > 0]
        if not droppable:
            break
        kept.remove(max(reversed(droppable), key=lambda i: columns[i].drop))
    room = width - total([0] * len(kept))
    sizes = [mins[i] for i in kept]
    if sum(sizes) > room:  # even the columns kept whole do not fit: all shrink (rich cuts with "…")
        scale = max(room, 0) / sum(sizes)
        sizes = [max(1, int(size * scale)) for size in sizes]
    spare = room - sum(sizes)
    spare = fill(sizes, [wants[i] for i in kept], spare)
    fill(sizes, [max(wants[i], cell_len(columns[i].header)) for i in kept], spare)
    widths: list[int | None] = [None] * len(columns)
    for i, size in zip(kept, sizes, strict=True):
        widths[i] = size
    return widths


def shorten(text: str, width: int, cut: Cut) -> str:
    """`text` with each word wider than `width` cut to it ("…" where cut); spaces as they were."""
    if cut is Cut.NEVER or width < 2:
        return text
    return re.sub(r"\S+", lambda m: cut_word(m.group(), width, cut), text)


def cut_word(word: str, width: int, cut: Cut) -> str:
    """`word` (or any text, taken whole) within `width` cells: cut at its end ("sqlite3.Curs…")
    or at its start ("…database.py:27")."""
    if cell_len(word) <= width:
        return word
    if cut is Cut.END:
        kept = ""
        for char in word:
            if cell_len(kept) + cell_len(char) > width - 1:
                break
            kept += char
        return kept + "…"
    kept = ""
    for char in reversed(word):
        if cell_len(kept) + cell_len(char) > width - 1:
            break
        kept = char + kept
    return "…" + kept


def _least(column: Column, cells: Sequence[Cell]) -> int:
    """The narrowest the column may be: its header's longest word, and each word as its cut allows."""
    least = max((cell_len(word) for word in column.header.split()), default=1)
    for cell in cells:
        for line, _ in lines(cell):
            for word in line.split():
                least = max(least, _word_least(word, column.cut))
    return least


def _word_least(word: str, cut: Cut) -> int:
    size = cell_len(word)
    if cut is Cut.NEVER:
        return size
    if cut is Cut.END:
        return min(size, SHORTEST)
    site = _SITE.search(word)
    last = site.group() if site else word.rsplit("/", 1)[-1] if "/" in word else word.rsplit(".", 1)[-1]
    return size if last == word else min(size, cell_len(last) + 1)


def lines(cell: Cell) -> tuple[tuple[str, str], ...]:
    """A cell's lines, each (text, style)."""
    return ((cell, ""),) if isinstance(cell, str) else cell


def _text(cell: Cell, width: int, cut: Cut) -> Text:
    text = Text()
    for index, (line, style) in enumerate(lines(cell)):
        if index:
            text.append("\n")
        text.append(shorten(line, width, cut), style=style)
    return text


def fill(sizes: list[int], wants: list[int], spare: int) -> int:
    """Grow `sizes` towards `wants` evenly (water-filling) with `spare` cells; what is left over."""
    while spare > 0:
        hungry = [i for i, want in enumerate(wants) if sizes[i] < want]
        if not hungry:
            break
        share = max(1, spare // len(hungry))
        for i in hungry:
            grow = min(share, wants[i] - sizes[i], spare)
            sizes[i] += grow
            spare -= grow
    return spare


__all__ = ["SHORTEST", "Cell", "Column", "Cut", "cut_word", "fill", "fit", "lines", "shorten", "table"]
