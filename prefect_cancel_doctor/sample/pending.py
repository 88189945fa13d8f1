"""Did a SIGTERM reach the interpreter? Read CPython's own flag from the target's memory.

When SIGTERM arrives while the main thread is inside a C call, CPython's C
handler only sets `Handlers[SIGTERM].tripped` and returns; the kernel's pending
bits are already clear, and the Python-level handler (Prefect's) runs when the
call returns to the interpreter. So the flag is the one trace of a delivered,
not yet handled SIGTERM: 1 means "delivered and pending", 0 means "none came
since the handler last ran".

It is read without stopping the target (`/proc/PID/mem`, as root or with ptrace
rights), from the `Handlers` symbol of the interpreter (the executable or
libpython), which lives in `.symtab`:

- CPython 3.10 and 3.11: `static volatile struct {int tripped; PyObject *func;}
  Handlers[NSIG]` in Modules/signalmodule.c, 16 bytes an entry on 64-bit.
  Readable when the build keeps its symbol table (python.org, pyenv, uv's
  python-build-standalone, the official Docker images); distribution builds
  (Debian's /usr/bin/python3) strip it: the answer is then None.
- CPython 3.12+: the handlers moved into `_PyRuntime.signals`, at an offset that
  depends on the minor version and the build; not read (None).

None always means "cannot tell": the caller falls back on other evidence.

sample/handler.py reads the same entry's `func` (the installed handler) through
`mappings` and `sigterm_entry`.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from prefect_cancel_doctor.sample.procfs import PathLike

#: Interpreters whose `Handlers` layout this module knows: (major, minor) → bytes per entry.
_ENTRY_SIZE = {(3, 10): 16, (3, 11): 16}
_INTERPRETER = re.compile(r"(?:libpython|python)(3)\.(\d+)[^/]*$")
_SYMBOL = b"Handlers"


def sigterm_pending(pid: int, proc_root: PathLike = "/proc") -> bool | None:
    """True if the interpreter of `pid` holds a SIGTERM it has not handled, False if not,
    None when that cannot be read (version, stripped build, permissions, process gone)."""
    try:
        entry = sigterm_entry(pid, proc_root, mappings(pid, proc_root))
        if entry is None:
            return None
        with open(f"{proc_root}/{pid}/mem", "rb", buffering=0) as memory:
            raw = os.pread(memory.fileno(), 4, entry.address)
        return len(raw) == 4 and struct.unpack("<i", raw)[0] != 0
    except (OSError, ValueError, struct.error):
        return None


class Mapping(NamedTuple):
    """One line of /proc/PID/maps (a tuple: a process has hundreds)."""

    start: int
    end: int
    readable: bool
    #: Offset in the mapped file (0 for anonymous memory).
    offset: int
    #: The mapped file's path, or "" / a pseudo-name (`[heap]`) for anonymous memory.
    path: str


@dataclass(frozen=True)
class SigtermEntry:
    """Where `Handlers[SIGTERM]` lives in a process: `tripped` (int) at `address`, `func`
    (PyObject *) at `address + 8`; and the interpreter's (major, minor) version."""

    address: int
    version: tuple[int, int]


def mappings(pid: int, proc_root: PathLike = "/proc") -> list[Mapping]:
    """Every mapping of `pid` (raises OSError if the process is gone or unreadable)."""
    found = []
    for line in Path(f"{proc_root}/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 5:
            continue
        start, _, end = parts[0].partition("-")
        path = parts[5] if len(parts) == 6 else ""
        found.append(Mapping(int(start, 16), int(end, 16), parts[1][:1] == "r", int(parts[2], 16), path))
    return found


def sigterm_entry(pid: int, proc_root: PathLike, maps: list[Mapping]) -> SigtermEntry | None:
    """The address of `Handlers[SIGTERM]` in `pid`'s memory, from the first interpreter
    mapping (executable or libpython) whose file has the `Handlers` symbol; None when the
    interpreter's version is not one whose layout is known, or no file has the symbol.

    May raise OSError / ValueError / struct.error (callers turn them into None)."""
    for mapping in maps:
        match = _INTERPRETER.search(mapping.path)
        if not match or mapping.offset != 0 or not mapping.path.startswith("/"):
            continue
        version = (int(match.group(1)), int(match.group(2)))
        entry = _ENTRY_SIZE.get(version)
        if entry is None:
            return None
        path = mapping.path
        symbol = _symbol(f"{proc_root}/{pid}/root{path}", _stat_key(pid, proc_root, path))
        if symbol is None:
            continue
        value, first_load = symbol
        return SigtermEntry(mapping.start - first_load + value + entry * int(signal.SIGTERM), version)
    return None


def _stat_key(pid: int, proc_root: PathLike, path: str) -> tuple[int, int, int]:
    info = os.stat(f"{proc_root}/{pid}/root{path}")
    return info.st_dev, info.st_ino, info.st_mtime_ns


@functools.lru_cache(maxsize=16)
def _symbol(path: str, key: tuple[int, int, int]) -> tuple[int, int] | None:
    """(value of `Handlers`, virtual address of the first PT_LOAD) in an ELF64 file, or None.

    `key` (device, inode, mtime) makes the cache follow the file, not its name.
    """
    with open(path, "rb") as elf:
        data = elf.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:  # ELF64, little-endian only
        return None
    phoff, shoff = struct.unpack_from("<QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", data, 0x36)
    first_load = None
    for index in range(phnum):
        kind, _, _, vaddr = struct.unpack_from("<IIQQ", data, phoff + index * phentsize)
        if kind == 1:  # PT_LOAD
            first_load = vaddr & ~0xFFF
            break
    if first_load is None:
        return None
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    for _, kind, _, _, offset, size, link, _, _, entsize in sections:
        if kind != 2 or not entsize:  # SHT_SYMTAB
            continue
        strings_offset = sections[link][4]
        for position in range(offset, offset + size, entsize):
            name, _, _, _, value, _ = struct.unpack_from("<IBBHQQ", data, position)
            start = strings_offset + name
            if data[start : start + len(_SYMBOL) + 1] == _SYMBOL + b"\0":
                return value, first_load
    return None


__all__ = ["Mapping", "SigtermEntry", "mappings", "sigterm_entry", "sigterm_pending"]
