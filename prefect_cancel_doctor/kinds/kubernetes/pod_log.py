"""What an ephemeral container wrote, read back: its rounds in the pod's log (kubelet timestamps),
and the pod's process table from its first round (a shared PID namespace's flow container)."""

from __future__ import annotations

from datetime import datetime, timezone

from prefect_cancel_doctor.proc.roles import argv_role
from prefect_cancel_doctor.sample.namespace import ScriptOutput, fix_cmdline

#: The line that ends a complete round of the sampling script.
ROUND_END = "\n@@PCD end"


def flow_root(collected: ScriptOutput, argv: tuple[str, ...]) -> int | None:
    """In a pod's shared PID namespace, the flow container's main process: among the processes whose
    parent is outside the namespace (ppid 0; PID 1, /pause, and the doctor's own containers left out),
    the one below which the engine or a Runner runs, else the one running the container's command
    (`argv`), else the only one; None when none of these tells."""
    table = process_table(collected)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    roots = [
        pid
        for pid, (ppid, cmdline) in table.items()
        if ppid == 0 and pid != 1 and not any("@@PCD" in word for word in cmdline)
    ]

    def runs_prefect(pid: int) -> bool:
        queue = [pid]
        while queue:
            current = queue.pop()
            if argv_role(table[current][1]) is not None:
                return True
            queue.extend(children.get(current, ()))
        return False

    for chosen in (
        [r for r in roots if runs_prefect(r)],
        [r for r in roots if argv and tuple(table[r][1]) == argv],
        roots,
    ):
        if len(chosen) == 1:
            return chosen[0]
    return None


def process_table(collected: ScriptOutput) -> dict[int, tuple[int, tuple[str, ...]]]:
    """pid → (ppid, command line) from the script's first round (stat) and round 0 (cmdline)."""
    table: dict[int, tuple[int, tuple[str, ...]]] = {}
    first = collected.files.get(min((r for r in collected.files if r > 0), default=1), {})
    for relative, content in first.items():
        pid_text, _, name = relative.partition("/")
        if name != "stat" or not pid_text.isdigit():
            continue
        stat = content.decode("utf-8", "replace")
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) < 2 or not fields[1].isdigit():
            continue
        cmdline = fix_cmdline(
            f"{pid_text}/cmdline", collected.files.get(0, {}).get(f"{pid_text}/cmdline", b"")
        )
        argv = tuple(a.decode("utf-8", "replace") for a in cmdline.split(b"\0") if a)
        table[int(pid_text)] = (int(fields[1]), argv)
    return table


def rounds(stamped: str) -> tuple[list[tuple[datetime, int, str | None]], datetime | None]:
    """A log read with timestamps=true: each round's start, ordinal and text (None while it is not
    complete), oldest first; and the time of its last line."""
    rounds: list[tuple[datetime, int, list[str]]] = []
    last: str | None = None
    for line in stamped.split("\n"):  # not splitlines(): /proc text may hold \x1c, \x85 ...
        stamp, _, rest = line.partition(" ")
        # A round is thousands of lines: only a cycle's first line and the last one are dated.
        if not _looks_stamped(stamp):
            continue
        rest += "\n"
        if rest.startswith("@@PCD cycle "):
            moment = rfc3339(stamp)
            if moment is None:
                continue
            rounds.append((moment, int(rest.split()[2]) if rest.split()[2:] else 0, []))
        elif rounds:
            rounds[-1][2].append(rest)
        last = stamp
    found: list[tuple[datetime, int, str | None]] = []
    for began, ordinal, lines in rounds:
        text = "\n" + "".join(lines)
        found.append((began, ordinal, text if ROUND_END in text else None))
    return found, rfc3339(last) if last is not None else None


def _looks_stamped(stamp: str) -> bool:
    """Whether a line starts with a kubelet timestamp ("2026-12-07T01:02:03.123456789Z")."""
    return len(stamp) >= 20 and stamp[4] == "-" and stamp[10] == "T" and stamp[:4].isdigit()


def rfc3339(stamp: str) -> datetime | None:
    """An RFC 3339 time with up to nanoseconds (the kubelet's log timestamps)."""
    head, _, fraction = stamp.rstrip("Z").partition(".")
    try:
        moment = datetime.fromisoformat(head + (f".{fraction[:6]}" if fraction else ""))
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


__all__ = ["ROUND_END", "flow_root", "process_table", "rfc3339", "rounds"]
