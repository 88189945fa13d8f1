"""What CPython keeps about SIGTERM, read from another process's memory: `Handlers[SIGTERM]`.

Standard library only, on purpose: where the doctor cannot read the target's memory from
here (a container sampled from a sidecar, a pod from an ephemeral container), the sampling
script runs this file's text with the target's own interpreter (`python -I -S -c <this file>
<pid>...`, see kinds/docker/sidecar.py), and it prints one JSON object a PID (`probe`). The host
side (sample/handler.py) turns what it reads into the model and makes names inert.
There, given the py-spy dump of the PID on stdin, it also reads the source files of the
dump's user-code frames (`user_sources`), as the target itself could read them: through
the target's root, and only files its uid and groups may read.

## The pending flag (`tripped`)

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

## The installed handler (`func`)

`Handlers[SIGTERM].func` (`sigterm_entry` finds the entry; `func` is the PyObject *
at offset 8) is the object `signal.signal(SIGTERM, ...)` was last given, and it is
followed through the target's memory, without stopping it (`/proc/PID/mem` reads only):

- `int` 0 / 1: SIG_DFL / SIG_IGN (the signal module keeps them as the small ints
  `PyLong_FromVoidPtr(SIG_DFL)` and `PyLong_FromVoidPtr(SIG_IGN)`).
- `function`: its `__qualname__`, and its code object's `co_filename` and
  `co_firstlineno`; PREFECT when that file is Prefect's own (a `prefect` package under
  site-packages or dist-packages, or one of Prefect's known handlers:
  `_prefect_sigterm_handler` in `prefect/utilities/engine/__init__.py` since 3.9,
  `capture_sigterm.<locals>.cancel_flow_run` in `prefect/utilities/engine.py` before).
- `method` (a bound method) and `functools.partial`: the function they wrap.
- `builtin_function_or_method` (`signal.default_int_handler`, `sys.exit`): its C name.
- Anything else (a callable instance): OTHER, named by its type.
- `None`: the handler was installed outside Python, in C (`signal.getsignal` answers
  None): OTHER, with no name.
- NULL (the signal module not set up yet, or the interpreter finalizing): Python keeps no
  record, so the kernel's disposition (`SigIgn` / `SigCgt` in /proc/PID/status) answers:
  ignored → IGNORE, neither ignored nor caught → DEFAULT, caught by C → None.

Layouts (64-bit, little-endian, release builds; checked with `offsetof` against the
headers of 3.10.13, 3.11.7 and Debian's 3.11.2, with gdb's `ptype /o` on the
`Handlers` and `partialobject` types of pyenv's 3.10.13 / 3.11.7 libpython, and by
reading live objects in both interpreters):

    PyObject           ob_type 8
    PyTypeObject       tp_name 24 (char *), tp_flags 168 (Py_TPFLAGS_HEAPTYPE = 1 << 9)
    PyLongObject       ob_size 16, ob_digit[0] 24 (uint32)
    PyFunctionObject   func_qualname 40, func_code 48
    PyCodeObject       3.10: co_firstlineno 40 (int), co_filename 104
                       3.11: co_firstlineno 72 (int), co_filename 112
    PyMethodObject     im_func 16
    partialobject      fn 16
    PyCFunctionObject  m_ml 16 → PyMethodDef.ml_name 0 (char *)
    PyASCIIObject      length 16, state 32 (interned:2 kind:3 compact:1 ascii:1 ready:1),
                       data at 48 (compact ASCII) or 72 (compact, PyCompactUnicodeObject)

The static types (`int`, `function`, `method`, `NoneType`, `builtin_function_or_method`,
`str`) are recognised by name and by not being heap types, so that a user class named
`function` is not read as one; `functools.partial` is a heap type from 3.10 on.

CPython 3.12+ is not read (None): the handlers moved from the `Handlers` static of
signalmodule.c into `_PyRuntime.signals.handlers`, at an offset that differs between
minor versions and build options (0x1d0 in pyenv's 3.12.1, 0x438 in its 3.13.0), and
the int (`lv_tag`), unicode (no `wstr`) and code object layouts changed too. Builds
without a symbol table (Debian's /usr/bin/python3) read None, as for the flag.

Every read is bounded: a pointer is followed only into a readable mapping of the
target, strings are read up to 512 bytes (longer ones are cut), at most four wrappers
(method, partial) are unwrapped, and any failed read makes the answer None. The target
keeps running and may replace its handler while it is read: every object's type is
checked before its fields are used, so a torn read most likely reads None rather than
a wrong handler.

Cost (measured: 300 calls timed with time.perf_counter on a live process in Prefect 3.9.1's
`capture_sigterm()`, Python 3.11, ~307 mappings): median 0.88 ms a call, p90 0.92 ms,
most of it reading and parsing /proc/PID/maps (~0.4 ms + ~0.3 ms); the first call on an
interpreter file also parses its ELF symbol table (~15 ms for pyenv's libpython3.11),
cached afterwards by (device, inode, mtime).
"""

from __future__ import annotations

import bisect
import json
import os
import re
import signal
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from prefect_cancel_doctor.proc.procfs import PathLike

#: Interpreters whose `Handlers` layout this module knows: (major, minor) → bytes per entry.
_ENTRY_SIZE = {(3, 10): 16, (3, 11): 16}
_INTERPRETER = re.compile(r"(?:libpython|python)(3)\.(\d+)[^/]*$")
_SYMBOL = b"Handlers"


def sigterm_pending(pid: int, proc_root: PathLike = "/proc") -> bool | None:
    """True if the interpreter of `pid` holds a SIGTERM it has not handled, False if not,
    None when that cannot be read (version, stripped build, permissions, process gone)."""
    return read_sigterm(pid, proc_root)[0]


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


#: `_symbol`'s answers by file (device, inode, mtime), the oldest dropped past `_SYMBOLS_KEPT`.
_symbols: dict[tuple[int, int, int], tuple[int, int] | None] = {}
_SYMBOLS_KEPT = 16
_symbols_lock = threading.Lock()


def _symbol(path: str, key: tuple[int, int, int]) -> tuple[int, int] | None:
    """(value of `Handlers`, virtual address of the first PT_LOAD) in an ELF64 file, or None.

    Read once per file (`key`: device, inode, mtime), not per name: every target's `path` is its
    own (/proc/PID/root/...), while targets sampled together mostly run the same interpreter.
    """
    with _symbols_lock:
        if key not in _symbols:
            if len(_symbols) >= _SYMBOLS_KEPT:
                del _symbols[next(iter(_symbols))]
            _symbols[key] = _read_symbol(path)
        return _symbols[key]


def _read_symbol(path: str) -> tuple[int, int] | None:
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


#: (major, minor) → (co_firstlineno, co_filename) offsets in PyCodeObject.
_CODE_OFFSETS = {(3, 10): (40, 104), (3, 11): (72, 112)}
_OB_TYPE = 8
_TP_NAME, _TP_FLAGS = 24, 168
_HEAPTYPE = 1 << 9
_LONG_SIZE, _LONG_DIGIT = 16, 24
_FUNC_QUALNAME, _FUNC_CODE = 40, 48
_METHOD_FUNC = 16
_PARTIAL_FN = 16
_CFUNCTION_ML = 16
_ASCII_HEADER, _COMPACT_HEADER = 48, 72
_STRING_CAP = 512
_TYPE_NAME_CAP = 128
_UNWRAP_DEPTH = 4

#: Prefect's own SIGTERM handlers, by qualified name (for a Prefect checkout not under site-packages).
_PREFECT_HANDLERS = frozenset({"_prefect_sigterm_handler", "capture_sigterm.<locals>.cancel_flow_run"})
_PACKAGE_DIRS = frozenset({"site-packages", "dist-packages"})


class _Unreadable(Exception):
    """A read outside the target's readable memory, or short, or of something unexpected."""


class _Memory:
    """Bounded reads of a process's memory through /proc/PID/mem."""

    def __init__(self, fd: int, maps: list[Mapping]) -> None:
        self._fd = fd
        readable = sorted((m.start, m.end) for m in maps if m.readable)
        self._starts = [start for start, _ in readable]
        self._ends = [end for _, end in readable]

    def _room(self, address: int) -> int:
        """Bytes readable from `address` to the end of its mapping (0 if unmapped)."""
        index = bisect.bisect_right(self._starts, address) - 1
        if index < 0 or address >= self._ends[index]:
            return 0
        return self._ends[index] - address

    def read(self, address: int, size: int) -> bytes:
        if address <= 0 or self._room(address) < size:
            raise _Unreadable(f"{size} bytes at {address:#x} are not mapped")
        data = os.pread(self._fd, size, address)
        if len(data) != size:
            raise _Unreadable(f"short read at {address:#x}")
        return data

    def pointer(self, address: int) -> int:
        value: int = struct.unpack("<Q", self.read(address, 8))[0]
        return value

    def c_string(self, address: int, cap: int) -> str:
        data = self.read(address, min(cap, self._room(address)))
        end = data.find(b"\0")
        if end < 0:
            raise _Unreadable("unterminated C string")
        return data[:end].decode("utf-8")


class Handler(NamedTuple):
    """The installed handler as read: `kind` is one of "default", "ignore", "prefect", "other"
    (the values of `model.HandlerKind`); names are the target's own, not yet made inert."""

    kind: str
    qualname: str | None = None
    filename: str | None = None
    line: int | None = None


_DEFAULT, _IGNORE, _PREFECT, _OTHER = "default", "ignore", "prefect", "other"


def read_handler(pid: int, proc_root: PathLike = "/proc") -> Handler | None:
    """The Python-level SIGTERM handler of the interpreter of `pid`, or None when that cannot
    be read (version, stripped build, permissions, process gone, a torn read)."""
    return read_sigterm(pid, proc_root)[1]


def read_sigterm(pid: int, proc_root: PathLike = "/proc") -> tuple[bool | None, Handler | None]:
    """(the pending flag, the installed handler) of `Handlers[SIGTERM]`, from one read of the
    process's mappings and one open of its memory; each None where it cannot be read."""
    try:
        maps = mappings(pid, proc_root)
        entry = sigterm_entry(pid, proc_root, maps)
        if entry is None:
            return None, None
        fd = os.open(f"{proc_root}/{pid}/mem", os.O_RDONLY)
    except (OSError, ValueError, struct.error):
        return None, None
    try:
        return _pending(fd, entry), _handler(pid, proc_root, fd, maps, entry)
    finally:
        os.close(fd)


def _pending(fd: int, entry: SigtermEntry) -> bool | None:
    try:
        raw = os.pread(fd, 4, entry.address)
        return len(raw) == 4 and struct.unpack("<i", raw)[0] != 0
    except (OSError, struct.error):
        return None


def _handler(
    pid: int, proc_root: PathLike, fd: int, maps: list[Mapping], entry: SigtermEntry
) -> Handler | None:
    if entry.version not in _CODE_OFFSETS:
        return None
    try:
        memory = _Memory(fd, maps)
        func = memory.pointer(entry.address + 8)
        if func == 0:
            return _from_kernel(pid, proc_root)
        return _Reader(memory, entry.version).handler(func)
    except (OSError, ValueError, KeyError, struct.error, _Unreadable):
        return None


class _Reader:
    """Follows the handler object through the target's memory."""

    def __init__(self, memory: _Memory, version: tuple[int, int]) -> None:
        self._memory = memory
        self._line_offset, self._filename_offset = _CODE_OFFSETS[version]
        self._types: dict[int, tuple[str, bool]] = {}

    def _type(self, obj: int) -> tuple[str, bool]:
        """(tp_name, is a heap type) of the object at `obj`."""
        type_address = self._memory.pointer(obj + _OB_TYPE)
        known = self._types.get(type_address)
        if known is None:
            raw = self._memory.read(type_address, _TP_FLAGS + 8)
            (name_address,) = struct.unpack_from("<Q", raw, _TP_NAME)
            (flags,) = struct.unpack_from("<Q", raw, _TP_FLAGS)
            known = self._memory.c_string(name_address, _TYPE_NAME_CAP), bool(flags & _HEAPTYPE)
            self._types[type_address] = known
        return known

    def _is_static(self, obj: int, name: str) -> bool:
        return self._type(obj) == (name, False)

    def handler(self, obj: int) -> Handler | None:
        for _ in range(_UNWRAP_DEPTH + 1):
            name, heap = self._type(obj)
            if name == "method" and not heap:
                obj = self._memory.pointer(obj + _METHOD_FUNC)
            elif name == "functools.partial":
                obj = self._memory.pointer(obj + _PARTIAL_FN)
            else:
                return self._leaf(obj, name, heap)
        return None

    def _leaf(self, obj: int, name: str, heap: bool) -> Handler | None:
        if heap:
            return Handler(_OTHER, qualname=name)
        if name == "int":
            size, digit = struct.unpack("<qI", self._memory.read(obj + _LONG_SIZE, 12))
            value = 0 if size == 0 else digit if size == 1 else None
            if value == int(signal.SIG_DFL):
                return Handler(_DEFAULT)
            if value == int(signal.SIG_IGN):
                return Handler(_IGNORE)
            return None  # no other int can be installed: a torn read
        if name == "NoneType":
            return Handler(_OTHER)
        if name == "function":
            return self._function(obj)
        if name == "builtin_function_or_method":
            method_def = self._memory.pointer(obj + _CFUNCTION_ML)
            qualname = self._memory.c_string(self._memory.pointer(method_def), _STRING_CAP)
            return Handler(_OTHER, qualname=qualname)
        return Handler(_OTHER, qualname=name)

    def _function(self, obj: int) -> Handler:
        qualname_address, code = struct.unpack("<QQ", self._memory.read(obj + _FUNC_QUALNAME, 16))
        qualname = self._string(qualname_address)
        if not self._is_static(code, "code"):
            raise _Unreadable("func_code is not a code object")
        (line,) = struct.unpack("<i", self._memory.read(code + self._line_offset, 4))
        filename = self._string(self._memory.pointer(code + self._filename_offset))
        kind = _PREFECT if _is_prefect(filename, qualname) else _OTHER
        return Handler(kind, qualname=qualname, filename=filename, line=line)

    def _string(self, obj: int) -> str:
        """A compact str object's text, cut at 512 bytes."""
        if not self._is_static(obj, "str"):
            raise _Unreadable("not a str")
        header = self._memory.read(obj, _ASCII_HEADER)
        (length,) = struct.unpack_from("<q", header, 16)
        (state,) = struct.unpack_from("<I", header, 32)
        kind, compact, ascii, ready = (state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1, (state >> 7) & 1
        if not (compact and ready) or kind not in (1, 2, 4) or length < 0 or (ascii and kind != 1):
            raise _Unreadable("not a compact str")
        characters = min(length, _STRING_CAP // kind)
        data = self._memory.read(obj + (_ASCII_HEADER if ascii else _COMPACT_HEADER), characters * kind)
        return data.decode({1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[kind])


def _is_prefect(filename: str, qualname: str) -> bool:
    """Prefect's own code: a `prefect` package installed under site-/dist-packages, or one of
    Prefect's known handlers in any `prefect` directory (a source checkout)."""
    parts = PurePosixPath(filename).parts[:-1]
    for index, part in enumerate(parts):
        if part == "prefect" and (
            qualname in _PREFECT_HANDLERS or (index and parts[index - 1] in _PACKAGE_DIRS)
        ):
            return True
    return False


def _from_kernel(pid: int, proc_root: PathLike) -> Handler | None:
    """No Python record (NULL): the kernel's disposition of SIGTERM for the process."""
    fields = _status(pid, proc_root)
    bit = 1 << (int(signal.SIGTERM) - 1)
    if int(fields["SigIgn"], 16) & bit:
        return Handler(_IGNORE)
    if int(fields["SigCgt"], 16) & bit:
        return None
    return Handler(_DEFAULT)


#: Source files read for one dump, and bytes a file (larger ones are left out).
SOURCE_FILES, SOURCE_BYTES = 20, 256 << 10
_LIBRARY = re.compile(r"/(?:site|dist)-packages/|/lib/python\d+\.\d+/")


def user_sources(pid: int, dump: str, proc_root: PathLike = "/proc") -> dict[str, str]:
    """path → text of the user-code files named by the frames of `dump` (py-spy's JSON for
    `pid`), read through the target's root and only where its credentials allow (so that a
    flow cannot have the doctor read a file it could not: `compile(src, "/root/x", "exec")`)."""
    try:
        threads = json.loads(dump[dump.find("[") :]) if "[" in dump else []
        credentials = _credentials(pid, proc_root)
    except (OSError, ValueError, KeyError, IndexError):
        return {}
    names: list[str] = []
    for thread in threads if isinstance(threads, list) else []:
        for frame in thread.get("frames") or () if isinstance(thread, dict) else ():
            name = frame.get("filename") if isinstance(frame, dict) else None
            if isinstance(name, str) and name.startswith("/") and not _LIBRARY.search(name):
                names.append(name)
    found: dict[str, str] = {}
    for name in list(dict.fromkeys(names))[:SOURCE_FILES]:
        try:
            path = f"{proc_root}/{pid}/root{name}"
            info = os.stat(path)
            if info.st_size > SOURCE_BYTES or not _may_read(info, credentials):
                continue
            with open(path, "rb") as handle:
                found[name] = handle.read(SOURCE_BYTES).decode("utf-8", "replace")
        except OSError:
            continue
    return found


def _status(pid: int, proc_root: PathLike) -> dict[str, str]:
    """/proc/PID/status as field → value (this module cannot use procfs: it runs on its own)."""
    return dict(
        line.split(":", 1)
        for line in Path(f"{proc_root}/{pid}/status").read_text().splitlines()
        if ":" in line
    )


def _credentials(pid: int, proc_root: PathLike) -> tuple[int, frozenset[int]]:
    """(filesystem uid, every gid) of `pid`, from /proc/PID/status."""
    fields = _status(pid, proc_root)
    uid = int(fields["Uid"].split()[3])
    gids = {int(fields["Gid"].split()[3]), *(int(g) for g in fields.get("Groups", "").split())}
    return uid, frozenset(gids)


def _may_read(info: os.stat_result, credentials: tuple[int, frozenset[int]]) -> bool:
    """Whether a process with these credentials may read the file (its mode bits; uid 0 may)."""
    uid, gids = credentials
    if uid == 0:
        return True
    if info.st_uid == uid:
        return bool(info.st_mode & 0o400)
    if info.st_gid in gids:
        return bool(info.st_mode & 0o040)
    return bool(info.st_mode & 0o004)


def probe(pid: int, dump: str = "", proc_root: PathLike = "/proc") -> dict[str, object]:
    """What this module reads of `pid`, as one JSON-ready object."""
    pending, found = read_sigterm(pid, proc_root)
    return {
        "pid": pid,
        "pending": pending,
        "handler": None if found is None else found._asdict(),
        "sources": user_sources(pid, dump, proc_root),
    }


if __name__ == "__main__":  # run by the sampling script with the target's own interpreter
    print(json.dumps(probe(int(sys.argv[1]), "" if sys.stdin.isatty() else sys.stdin.read())))
