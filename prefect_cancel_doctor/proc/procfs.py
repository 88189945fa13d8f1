"""Pure readers over a /proc tree: what the kernel says about a process.

Every function takes `proc_root` so tests can point it at a recorded tree.
A process can exit between two reads; readers then return None (or skip the
vanished thread or fd) instead of raising.
"""

from __future__ import annotations

import functools
import importlib.util
import ipaddress
import os
import re
import sys
from collections.abc import Collection
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeAlias

from prefect_cancel_doctor.core.inert import visible, visible_or_none
from prefect_cancel_doctor.core.prefect_names import FLOW_RUN_ENV_ENTRY
from prefect_cancel_doctor.core.redact import redact_argv, redact_code
from prefect_cancel_doctor.model import KernelThread, ProcSnapshot, SocketPeer
from prefect_cancel_doctor.proc.as_target import read_as_target
from prefect_cancel_doctor.proc.syscalls import syscall_name

PathLike: TypeAlias = "str | os.PathLike[str]"

FLOW_RUN_KEY = FLOW_RUN_ENV_ENTRY
_CONTROL_PORT_KEY = b"PREFECT__CONTROL_PORT="
_SOCKET_LINK = re.compile(r"socket:\[(\d+)\]")
_TCP_STATES = {
    0x01: "ESTABLISHED",
    0x02: "SYN_SENT",
    0x03: "SYN_RECV",
    0x04: "FIN_WAIT1",
    0x05: "FIN_WAIT2",
    0x06: "TIME_WAIT",
    0x07: "CLOSE",
    0x08: "CLOSE_WAIT",
    0x09: "LAST_ACK",
    0x0A: "LISTEN",
    0x0B: "CLOSING",
    0x0C: "NEW_SYN_RECV",
}
# Errors that mean "the process (or thread) is gone": ENOENT once reaped,
# ESRCH for some files of a task that is exiting.
_VANISHED = (FileNotFoundError, ProcessLookupError)


class _Gone(Exception):
    """Internal: the process vanished while it was being read."""


def read_process(
    pid: int, proc_root: PathLike = "/proc", *, read_sockets: bool = True
) -> ProcSnapshot | None:
    """Read one process's kernel view from `proc_root`; None if it does not exist (any more).

    `read_sockets=False` leaves `sockets` empty: /proc/PID/net/tcp walks the kernel's whole
    connection table (milliseconds on a large host), too slow to repeat before every dump.
    """
    base = Path(proc_root) / str(pid)
    try:
        state, ppid, pgid, start_time = _parse_stat(_read_text(base / "stat"))
        status = _parse_status(_read_text(base / "status"))
        cmdline = read_cmdline(base / "cmdline")
        comm = visible(_read_text(base / "comm").rstrip("\n"))
        threads = _read_threads(base)
        sockets = _read_sockets(base) if read_sockets else ()
        children = _read_children(pid, base, Path(proc_root))
        environ = _read_raw(f"{base}/environ")
        flow_run_id = env_value(environ or b"", FLOW_RUN_KEY)
        snapshot = ProcSnapshot(
            pid=pid,
            ppid=ppid,
            cmdline=cmdline,
            comm=comm,
            state=state,
            ns_pid=_last_int(status.get("NSpid"), default=pid),
            sig_ignored=_hex(status.get("SigIgn")),
            sig_caught=_hex(status.get("SigCgt")),
            sig_blocked=_hex(status.get("SigBlk")),
            sig_pending=_hex(status.get("SigPnd")),
            shared_pending=_hex(status.get("ShdPnd")),
            threads=threads,
            sockets=sockets,
            children=children,
            flow_run_id=flow_run_id,
            start_time_ticks=start_time,
            environ_readable=environ is not None,
            control_port=_port(env_value(environ or b"", _CONTROL_PORT_KEY)),
            pgid=pgid,
        )
    except (_Gone, ValueError, IndexError):
        # Gone, or files no kernel writes (only a fixture tree can hold them): no process to read.
        return None
    return snapshot


def flow_run_processes(
    proc_root: PathLike = "/proc", unreadable: list[int] | None = None
) -> dict[str, list[int]]:
    """Map each `PREFECT__FLOW_RUN_ID` found in a process environment to its pids (ascending).

    `unreadable` receives the PIDs whose environment could not be read (other users'
    processes, for a doctor without ptrace rights): runs among them are not seen.
    """
    found: dict[str, list[int]] = {}
    root = os.fspath(proc_root)
    for pid in _list_ints(Path(root)):
        environ = _read_raw(f"{root}/{pid}/environ")
        if environ is None:
            if unreadable is not None and _is_user_process(f"{root}/{pid}"):
                unreadable.append(pid)
            continue
        if FLOW_RUN_KEY not in environ:
            continue
        run_id = env_value(environ, FLOW_RUN_KEY)
        if run_id:
            found.setdefault(run_id, []).append(pid)
    return found


#: `PF_KTHREAD` in /proc/PID/stat's flags: a kernel thread (no environment to read).
_PF_KTHREAD = 0x00200000


def pids(proc_root: PathLike = "/proc") -> list[int]:
    """Every process ID under `proc_root`, ascending."""
    return _list_ints(Path(proc_root))


def read_environ(pid: int, proc_root: PathLike = "/proc") -> bytes | None:
    """A process's raw environment block as it started; None when unreadable or gone."""
    return _read_raw(f"{os.fspath(proc_root)}/{pid}/environ")


def read_stat_fields(pid: int, proc_root: PathLike = "/proc") -> tuple[int, int, int] | None:
    """(ppid, process group, start time in clock ticks) of a process; None when gone."""
    try:
        _, ppid, pgid, start_time = _parse_stat(_read_text(Path(proc_root) / str(pid) / "stat"))
    except (_Gone, ValueError):
        return None
    return ppid, pgid, start_time


def boot_time(proc_root: PathLike = "/proc") -> datetime | None:
    """When this host booted (`btime` in /proc/stat): process start times count from it."""
    for line in (read_optional_text(Path(os.fspath(proc_root)) / "stat") or "").splitlines():
        if line.startswith("btime "):
            return datetime.fromtimestamp(int(line.split()[1]), timezone.utc)
    return None


def _is_user_process(base: str) -> bool:
    """Whether `base` (/proc/PID) is a process that still exists and is not a kernel thread (one
    whose very stat is refused, under `hidepid=1`, counts: it may be anything)."""
    try:
        stat = _read_raw(f"{base}/stat", strict=True)
    except PermissionError:
        return True
    except OSError:
        return False
    if not stat:
        return False
    fields = stat[stat.rfind(b")") + 2 :].split()
    return len(fields) > 6 and fields[6].isdigit() and not int(fields[6]) & _PF_KTHREAD


def is_kernel_thread(pid: int, proc_root: PathLike = "/proc") -> bool:
    """Whether `pid` is a kernel thread (`PF_KTHREAD`): no program, no Python, runs in it."""
    stat = _read_raw(f"{os.fspath(proc_root)}/{pid}/stat")
    fields = stat[stat.rfind(b")") + 2 :].split() if stat else []
    return len(fields) > 6 and fields[6].isdigit() and bool(int(fields[6]) & _PF_KTHREAD)


#: CAP_SYS_PTRACE's bit in /proc/PID/status's capability sets.
_CAP_SYS_PTRACE = 19


def reads_every_process() -> bool:
    """Whether this process may read every process's environment and memory: it has
    CAP_SYS_PTRACE (root, unless a container dropped it). Without it, other users' processes
    are closed to it. What the kernel refuses even then (another user namespace's init, a process a
    security module shields) is no run of this host's Prefect."""
    status = _parse_status(read_optional_text(Path("/proc/self/status")) or "")
    return bool(_hex(status.get("CapEff")) >> _CAP_SYS_PTRACE & 1)


def hides_processes(proc_root: PathLike = "/proc") -> str | None:
    """The `hidepid=` option `proc_root` is mounted with when it hides other users' processes
    from a reader without the right to read them (`hidepid=2`/`invisible`, `4`/`ptraceable`:
    they are not even listed); None otherwise."""
    root = os.path.realpath(os.fspath(proc_root))
    for line in (read_optional_text(Path("/proc/self/mountinfo")) or "").splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[4] != root or " - proc " not in line:
            continue
        options = line.rsplit(" ", 1)[-1].split(",")
        hiding = [
            o for o in options if o in ("hidepid=2", "hidepid=invisible", "hidepid=4", "hidepid=ptraceable")
        ]
        return hiding[0] if hiding else None
    return None


def thread_ns_tids(pid: int, proc_root: PathLike = "/proc") -> dict[int, int]:
    """Map each thread's id in its innermost PID namespace to its id in `proc_root`'s namespace."""
    mapping: dict[int, int] = {}
    task_dir = Path(proc_root) / str(pid) / "task"
    for tid in _list_ints(task_dir):
        try:
            status = _parse_status(_read_text(task_dir / str(tid) / "status"))
        except _Gone:
            continue
        mapping[_last_int(status.get("NSpid"), default=tid)] = tid
    return mapping


def read_state(pid: int, proc_root: PathLike = "/proc") -> str | None:
    """The process's one-letter state (R, S, D, T, t, Z, ...), or None if it is gone."""
    try:
        return _parse_stat(_read_text(Path(proc_root) / str(pid) / "stat"))[0]
    except _Gone:
        return None


def still_same(before: ProcSnapshot, now: ProcSnapshot | None) -> bool:
    """Whether `now` is the process `before` described, still alive (not gone, a zombie or a reused PID)."""
    return now is not None and now.state != "Z" and now.start_time_ticks == before.start_time_ticks


def same_process(before: ProcSnapshot, proc_root: PathLike = "/proc") -> bool:
    """Re-read /proc: whether the process `before` described still runs (see `still_same`)."""
    return still_same(before, read_process(before.pid, proc_root, read_sockets=False))


def has_signal(mask: int, signum: int) -> bool:
    """Whether signal `signum` is set in a /proc signal mask (bit signum-1)."""
    return bool(mask >> (signum - 1) & 1)


def read_source_line(
    pid: int, filename: str, line: int, proc_root: PathLike = "/proc", *, start: int | None = None
) -> str | None:
    """Line `line` of `filename` as the process sees it and could read it (`read_source_text`),
    stripped and with literal secrets redacted (see `redact_code`). `start`: the process's start
    time, where the caller has just read it (`ProcSnapshot.start_time_ticks`), else it is read."""
    if line < 1:
        return None
    lines = _source_lines(*_source_key(pid, filename, proc_root, start))
    if lines is None or line > len(lines):
        return None
    return visible(redact_code(lines[line - 1].strip()))


#: The largest source file `read_source_text` reads whole (generated modules can be huge).
MAX_SOURCE_BYTES = 2 * 1024 * 1024


def read_source_text(pid: int, filename: str, proc_root: PathLike = "/proc") -> str | None:
    """The whole of `filename` as the process sees it (an absolute name in its root, a relative one
    from its working directory) and as it could read it: opened with its credentials or not at all
    (`as_target.read_as_target`: a flow naming a file only root may read never gets it read by a
    root doctor). Decoded as Python decodes source; None when it cannot be read or is larger than
    MAX_SOURCE_BYTES.

    This is the one place the doctor reads a target's source: `read_source_line` and every
    caller of either go through it."""
    data = _source_bytes(*_source_key(pid, filename, proc_root))
    if data is None:
        return None
    try:
        return importlib.util.decode_source(data)  # a coding cookie or BOM, as the interpreter reads it
    except (SyntaxError, LookupError, UnicodeDecodeError):
        return data.decode("utf-8", errors="replace")


_SourceKey: TypeAlias = "tuple[str, int, int, str, str]"


def _source_key(pid: int, filename: str, proc_root: PathLike, start: int | None = None) -> _SourceKey:
    """What a read is cached under: the process (its start time: a reused PID is another process)
    and, for a relative name, its working directory as it is now (it may change)."""
    root = os.fspath(proc_root)
    if start is None:
        fields = read_stat_fields(pid, root)
        start = fields[2] if fields else -1
    cwd = "" if os.path.isabs(filename) else (_readlink(f"{root}/{pid}/cwd") or "?")
    return root, pid, start, filename, cwd


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


@functools.lru_cache(maxsize=64)
def _source_bytes(root: str, pid: int, start: int, filename: str, cwd: str) -> bytes | None:
    if not filename or filename.startswith("<"):
        return None
    data = read_as_target(pid, filename, MAX_SOURCE_BYTES, root)
    return None if data is None or len(data) > MAX_SOURCE_BYTES else data


@functools.lru_cache(maxsize=64)
def _source_lines(root: str, pid: int, start: int, filename: str, cwd: str) -> tuple[str, ...] | None:
    data = _source_bytes(root, pid, start, filename, cwd)
    return None if data is None else tuple(re.split(r"\r\n|\r|\n", data.decode("utf-8", errors="replace")))


def _read_threads(base: Path) -> tuple[KernelThread, ...]:
    threads = []
    for tid in _list_ints(base / "task", required=True):
        thread = _read_thread(f"{base}/task/{tid}", tid)
        if thread is not None:
            threads.append(thread)
    return tuple(threads)


def _read_thread(task: str, tid: int) -> KernelThread | None:
    # Read for every thread before every dump (a Prefect engine has ~50): raw reads, and of the
    # status only the two masks (0.4 ms a thread through pathlib and a parsed status, 0.1 ms so).
    try:
        state = _parse_stat(_raw_text(f"{task}/stat"))[0]
        status = _raw_text(f"{task}/status")
        name = visible(_raw_text(f"{task}/comm").rstrip("\n"))
        wchan = visible_or_none(_raw_optional(f"{task}/wchan"))
        syscall_text = _raw_optional(f"{task}/syscall")
        syscall = _parse_syscall(syscall_text)
        return KernelThread(
            tid=tid,
            name=name,
            state=state,
            wchan=None if wchan in (None, "", "0") else wchan,
            syscall=syscall,
            syscall_name=syscall_name(syscall),
            sig_blocked=_hex(_status_field(status, "SigBlk")),
            sig_pending=_hex(_status_field(status, "SigPnd")),
            syscall_args=_parse_syscall_args(syscall_text),
        )
    except (_Gone, ValueError, IndexError):
        return None


def _read_sockets(base: Path) -> tuple[SocketPeer, ...]:
    inodes: dict[int, int] = {}
    for fd in _list_ints(base / "fd"):
        try:
            match = _SOCKET_LINK.fullmatch(os.readlink(base / "fd" / str(fd)))
        except OSError:
            continue
        if match:
            inodes[int(match.group(1))] = fd
    if not inodes:
        return ()
    peers = []
    for table in ("tcp", "tcp6"):
        text = read_optional_text(base / "net" / table) or ""
        for local, remote, state, inode in parse_tcp_table(text, inodes.keys()):
            peers.append(SocketPeer(fd=inodes[inode], local=local, remote=remote, state=state))
    return tuple(sorted(peers, key=lambda p: p.fd))


def parse_tcp_table(text: str, inodes: Collection[int] | None = None) -> list[tuple[str, str, str, int]]:
    """The rows of /proc/PID/net/tcp{,6}: (local, remote, state, socket inode); only those of
    `inodes` where given (the table is the whole network namespace's: hundreds of rows a host,
    and decoding each address costs more than reading the row)."""
    rows = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        try:
            inode = int(fields[9])
            if inodes is not None and inode not in inodes:
                continue
            local, remote = _decode_address(fields[1]), _decode_address(fields[2])
            rows.append((local, remote, _TCP_STATES.get(int(fields[3], 16), fields[3]), inode))
        except ValueError:
            continue
    return rows


def _decode_address(hex_address: str) -> str:
    """Decode /proc/net/tcp's "0100007F:1538" into "127.0.0.1:5432" (IPv6 as "[::1]:5432")."""
    hex_ip, hex_port = hex_address.split(":")
    raw = bytes.fromhex(hex_ip)
    # The kernel prints the address as 32-bit words in host byte order.
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    port = int(hex_port, 16)
    if len(raw) == 4:
        return f"{ipaddress.IPv4Address(raw)}:{port}"
    return f"[{ipaddress.IPv6Address(raw)}]:{port}"


def _read_children(pid: int, base: Path, proc_root: Path) -> tuple[int, ...]:
    children: set[int] = set()
    found_file = False
    for tid in _list_ints(base / "task"):
        text = _raw_optional(f"{base}/task/{tid}/children")
        if text is not None:
            found_file = True
            children.update(int(c) for c in text.split() if c.isascii() and c.isdigit())
    if not found_file:
        # Kernels without CONFIG_PROC_CHILDREN: scan every process's parent.
        for other in _list_ints(proc_root):
            try:
                if _parse_stat(_read_text(proc_root / str(other) / "stat"))[1] == pid:
                    children.add(other)
            except _Gone:
                continue
    return tuple(sorted(children))


def _parse_stat(text: str) -> tuple[str, int, int, int]:
    """State, ppid, process group and start time (clock ticks) from a stat line.

    comm may hold ')' and spaces.
    """
    fields = text[text.rfind(")") + 2 :].split() if ")" in text else []
    if len(fields) < 20:
        raise _Gone("truncated stat")  # an exiting task can yield an empty read
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _parse_status(text: str) -> dict[str, str]:
    status = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()
    return status


def _status_field(text: str, key: str) -> str | None:
    """One field of a status file (as `_parse_status` reads it), without parsing the others."""
    at = text.find(f"\n{key}:")
    if at < 0:
        return None
    start = at + len(key) + 2
    end = text.find("\n", start)
    return text[start : end if end >= 0 else len(text)].strip()


def _parse_syscall(text: str | None) -> int | None:
    if not text or text.startswith("running"):
        return None
    number = int(text.split()[0])
    return None if number < 0 else number


def _parse_syscall_args(text: str | None) -> tuple[int, ...]:
    """The six arguments of a blocked syscall ("number a1 … a6 sp pc", hexadecimal)."""
    if not text or text.startswith("running"):
        return ()
    fields = text.split()
    return tuple(int(field, 16) for field in fields[1:7]) if len(fields) >= 7 else ()


def read_cmdline(path: Path) -> tuple[str, ...]:
    """A process's command line, made inert, its secrets redacted."""
    data = _read_raw(str(path))
    return redact_argv(tuple(visible(os.fsdecode(arg)) for arg in data.split(b"\0")[:-1])) if data else ()


def env_value(environ: bytes, key: bytes) -> str | None:
    """One variable of a raw environment block (inert, at most 100 characters)."""
    for entry in environ.split(b"\0"):
        if entry.startswith(key):
            return visible(entry[len(key) :].decode("utf-8", errors="replace"), 100)
    return None


def _port(value: str | None) -> int | None:
    return int(value) if value and value.isascii() and value.isdigit() and 0 < int(value) < 65536 else None


def _list_ints(directory: Path, *, required: bool = False) -> list[int]:
    try:
        names = os.listdir(directory)
    except _VANISHED as exc:
        if required:
            raise _Gone from exc
        return []
    except PermissionError:
        return []
    return sorted(int(name) for name in names if name.isdigit())


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except _VANISHED as exc:
        raise _Gone(str(path)) from exc


def _raw_text(path: str) -> str:
    """`_read_text` through os.open/os.read (`_read_raw`), for the files read for every thread.

    Not `_read_text`'s body for every caller: a read refused after the open reads as gone here
    (a thread exiting between the two), where `_read_text` lets a permission error through, and
    no newline is translated (a process's own `comm` or a socket's path may hold a "\\r")."""
    try:
        data = _read_raw(path, strict=True)
    except _VANISHED as exc:
        raise _Gone(path) from exc
    if data is None:
        raise _Gone(path)  # a read refused once open: ESRCH from a task that is exiting
    return data.decode("utf-8", errors="replace")


def _raw_optional(path: str) -> str | None:
    """`read_optional_text` through os.open/os.read."""
    data = _read_raw(path)
    return None if data is None else data.decode("utf-8", errors="replace").strip()


def read_optional_text(path: Path) -> str | None:
    """A file that may be unreadable (permissions) or absent on this kernel: None then."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _read_raw(path: str, *, strict: bool = False) -> bytes | None:
    """A whole file through os.open/os.read: this runs for every process, so skip buffered IO.
    (`strict`: a file that cannot be opened raises its OSError, instead of None.)"""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if strict:
            raise
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _hex(value: str | None) -> int:
    return int(value, 16) if value else 0


def _last_int(value: str | None, *, default: int) -> int:
    return int(value.split()[-1]) if value else default
