"""How long work says how far it has come: the scan's and the health report's progress callback."""

from __future__ import annotations

from collections.abc import Callable

#: Called as work advances: (what is being done, done so far, total).
ProgressFn = Callable[[str, int, int], None]

__all__ = ["ProgressFn"]
