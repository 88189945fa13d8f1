"""Read a file of a target process only as that process could read it.

A frame's filename is whatever the target's code says it is: `compile(src,
"/root/secret.txt", "exec")` makes a frame "in" a root-only file. A doctor running
as root that opened the name itself would read that file for an unprivileged
flow and print, publish and store its lines (a confused deputy). So the file is
opened with the target's credentials, inside the target's filesystem view, or
not at all:

- a forked child of the doctor, one per target process, enters the target's root
  (`/proc/PID/root`: `fchdir` + `chroot`, so that absolute symlinks and `..`
  resolve inside the target's mount namespace, not the doctor's), drops to the
  target's file-system uid, gid and supplementary groups (from
  `/proc/PID/status`), and only then opens the names it is sent; the kernel
  itself decides, with everything it weighs (mode bits, every directory's search
  bit, ACLs, security modules), exactly as for the target. A uid other than 0
  keeps no capability after `setresuid`, so no `CAP_DAC_OVERRIDE` is left to the
  child; a target running as uid 0 gets a child with root's rights, as it has
  them itself (a root target with fewer capabilities, e.g. a container's, may be
  shown a file it could not open: its own root filesystem's, never the host's);
- a relative name is opened from the target's working directory as it is at the
  request: the doctor opens `/proc/PID/cwd` and passes it along (a descriptor
  over the reader's socket pair);
- the child closes every descriptor it inherited but its socket first, reads
  regular files only (a FIFO or a device would block or never end), at most
  `limit + 1` bytes each; a read not answered within `_DEADLINE_SECONDS` (a hung
  mount) kills it, and it leaves by itself after `_IDLE_SECONDS` without a
  request, or as soon as the doctor is gone (its end of the socket closes);
- a doctor that is not root cannot take another user's credentials: it reads
  only for a target whose credentials are its own, through `/proc/PID/root`
  (nothing it could not read as itself), and nothing otherwise.

Why a forked child rather than checking the file's mode bits from the doctor:
a mode check must also walk every directory's search bit, follow symlinks the
way the target would (through its root, not the doctor's), and cannot see ACLs
or security modules; the kernel does all of it for free. Why one child per
target rather than per file: a fork (and the exit) of a doctor of 60 MB costs
2 to 25 ms, and a scan reads tens of files for each of tens of targets (a read
from a live reader: under a millisecond). The child runs only `os` and `socket`
calls, no lock another thread of the doctor may hold.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import signal
import socket
import stat
import struct
import threading
import time
from collections import OrderedDict
from typing import TypeAlias

PathLike: TypeAlias = "str | os.PathLike[str]"
#: File-system uid, gid and supplementary groups.
Credentials: TypeAlias = "tuple[int, int, frozenset[int]]"

#: A read that takes longer than this (a hung network mount) is given up, and its reader killed.
_DEADLINE_SECONDS = 5.0
#: A reader with no request for this long leaves (a long `watch` or `agent` keeps none idle).
_IDLE_SECONDS = 30.0
#: Readers kept at once (one per target process; the least recently used is ended first).
_MAX_READERS = 16
_REQUEST = struct.Struct(">IQ")  # name length, limit
_ANSWER = struct.Struct(">BQ")  # found (1) or not (0), data length


def credentials(pid: int, proc_root: PathLike = "/proc") -> Credentials | None:
    """The file-system uid, gid and supplementary groups the kernel checks a file access of
    `pid` against (`/proc/PID/status`: Uid's and Gid's fourth field, Groups); None when unread."""
    try:
        with open(_path(proc_root, pid, "status"), encoding="utf-8", errors="replace") as file:
            status = file.read()
    except OSError:
        return None
    fields = {key: value.split() for key, _, value in (line.partition(":") for line in status.splitlines())}
    try:
        uid, gid = int(fields["Uid"][3]), int(fields["Gid"][3])
        groups = frozenset(int(group) for group in fields.get("Groups", ()))
    except (KeyError, IndexError, ValueError):
        return None
    return uid, gid, groups


def read_as_target(pid: int, filename: str, limit: int, proc_root: PathLike = "/proc") -> bytes | None:
    """At most `limit + 1` bytes of `filename` (absolute: in the target's root; relative: from its
    working directory as it is now) read with the target's credentials; None when it could not
    have read it, it is no regular file, or the target is gone."""
    creds = credentials(pid, proc_root)
    if creds is None or not filename or "\0" in filename:
        return None
    if os.geteuid() != 0:
        return _read_as_self(pid, filename, limit, proc_root) if _same(creds, _own_credentials()) else None
    for _ in range(2):  # a reader that left (idle) since its last read is made again, once
        reader = _reader(pid, proc_root, creds)
        if reader is None:
            return None
        try:
            return reader.read(filename, limit, _path(proc_root, pid, "cwd"))
        except _ReaderGone:
            continue
    return None


def _same(one: Credentials, other: Credentials) -> bool:
    """Whether two credentials grant the same file access (a gid listed among the groups or not)."""
    return one[:2] == other[:2] and one[2] | {one[1]} == other[2] | {other[1]}


def _own_credentials() -> Credentials:
    return os.geteuid(), os.getegid(), frozenset(os.getgroups())


def _read_as_self(pid: int, filename: str, limit: int, proc_root: PathLike) -> bytes | None:
    """The target's credentials are the doctor's: through /proc/PID/root, as itself."""
    where = "root" if os.path.isabs(filename) else "cwd"
    try:
        fd = os.open(_path(proc_root, pid, where, filename.lstrip("/")), _OPEN_FLAGS)
    except OSError:
        return None
    try:
        return _read_regular(fd, limit)
    finally:
        os.close(fd)


_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _read_regular(fd: int, limit: int) -> bytes | None:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return None
    os.set_blocking(fd, True)
    chunks: list[bytes] = []
    size = 0
    while size <= limit and (chunk := os.read(fd, min(65536, limit + 1 - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


# -- one reader a target ----------------------------------------------------------------------


class _Reader:
    """A forked child in the target's root with its credentials, reading the names it is sent
    (over a socket pair: a relative name comes with the target's working directory, opened by
    the doctor just before, as a descriptor)."""

    def __init__(self, pid: int, proc_root: PathLike, creds: Credentials) -> None:
        self.lock = threading.Lock()
        self.socket, theirs = socket.socketpair()
        self.child = os.fork()
        if self.child == 0:  # pragma: no cover - the forked child; its answers are what is tested
            try:
                _serve(pid, proc_root, creds, theirs.fileno())
            finally:
                os._exit(0)
        theirs.close()
        self.alive = True

    def read(self, filename: str, limit: int, cwd: str) -> bytes | None:
        """The file's bytes, None when the target could not read it or no answer came in time;
        `_ReaderGone` when the child had left before the question (ask a new one)."""
        with self.lock:
            if not self.alive:
                raise _ReaderGone
            name = os.fsencode(filename)
            fds = []
            try:
                if not os.path.isabs(filename):
                    fds.append(os.open(cwd, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            except OSError:
                return None
            try:
                socket.send_fds(self.socket, [_REQUEST.pack(len(name), limit) + name], fds)
                found, size = _ANSWER.unpack(self._receive(_ANSWER.size))
                data = self._receive(size) if size else b""
            except (OSError, _ReaderGone) as exc:
                self.close()
                if isinstance(exc, TimeoutError):
                    return None
                raise _ReaderGone from exc
            finally:
                for fd in fds:
                    os.close(fd)
            return data if found else None

    def _receive(self, size: int) -> bytes:
        deadline = time.monotonic() + _DEADLINE_SECONDS
        chunks: list[bytes] = []
        while size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.socket], [], [], left)[0]:
                raise TimeoutError("no answer in time")
            chunk = self.socket.recv(min(size, 1 << 20))
            if not chunk:
                raise _ReaderGone
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """End the child (killed: it may be stuck in a read) and reap it, without waiting on a
        child the kernel holds in an uninterruptible read (it is reaped by the next close)."""
        if not self.alive:
            return
        self.alive = False
        self.socket.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.child, signal.SIGKILL)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                if os.waitpid(self.child, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            time.sleep(0.005)


class _ReaderGone(Exception):
    """The reader's child is gone (it left when idle, or could not enter the target)."""


_readers: OrderedDict[tuple[str, int, int, Credentials], _Reader] = OrderedDict()
_readers_lock = threading.Lock()


def _reader(pid: int, proc_root: PathLike, creds: Credentials) -> _Reader | None:
    """The live reader of process `pid` (its start time and credentials: a reused PID, or a
    process that changed its uid, gets a reader of its own), made on first use."""
    root = os.fspath(proc_root)
    try:
        with open(_path(root, pid, "stat"), "rb") as file:
            start = int(file.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        start = -1  # (a recorded /proc tree may have no stat; a gone process fails in the child)
    key = (root, pid, start, creds)
    with _readers_lock:
        reader = _readers.get(key)
        if reader is not None and reader.alive:
            _readers.move_to_end(key)
            return reader
        while len(_readers) >= _MAX_READERS:
            _readers.popitem(last=False)[1].close()
        try:
            _readers[key] = reader = _Reader(pid, root, creds)
        except OSError:
            return None
        return reader


@atexit.register
def close_readers() -> None:
    """End every reader (at exit; tests too)."""
    with _readers_lock:
        while _readers:
            _readers.popitem()[1].close()


def _serve(pid: int, proc_root: PathLike, creds: Credentials, channel: int) -> None:  # pragma: no cover
    """The reader's child: enter the target's root, take its credentials, answer until the doctor
    closes its end or nothing is asked for `_IDLE_SECONDS`."""
    # Ctrl-C is the doctor's to handle: this child leaves when the doctor's end closes.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Nothing the doctor holds (API connections, files) stays reachable, e.g. through /proc/self/fd.
    os.closerange(0, channel)
    os.closerange(channel + 1, os.sysconf("SC_OPEN_MAX"))
    sock = socket.socket(fileno=channel)
    root = os.open(_path(proc_root, pid, "root"), os.O_RDONLY | os.O_DIRECTORY)
    os.fchdir(root)
    os.chroot(".")
    os.close(root)
    uid, gid, groups = creds
    os.setgroups(list(groups))
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    while select.select([sock], [], [], _IDLE_SECONDS)[0]:
        header, fds, _, _ = socket.recv_fds(sock, _REQUEST.size, 1)
        if not header:
            return
        rest = _receive_exactly(sock, _REQUEST.size - len(header))
        size, limit = _REQUEST.unpack(header + rest)
        name = _receive_exactly(sock, size)
        try:
            data = _open_and_read(name, limit, fds[0] if fds else None)
        finally:
            for fd in fds:
                os.close(fd)
        sock.sendall(_ANSWER.pack(data is not None, len(data or b"")) + (data or b""))


def _open_and_read(name: bytes, limit: int, cwd: int | None) -> bytes | None:  # pragma: no cover - child
    """A regular file by an absolute name (in the root entered), or a relative one from `cwd`."""
    if not name.startswith(b"/") and cwd is None:
        return None
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=None if name.startswith(b"/") else cwd)
    except OSError:
        return None
    try:
        return _read_regular(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _receive_exactly(sock: socket.socket, size: int) -> bytes:  # pragma: no cover - child
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _path(proc_root: PathLike, pid: int, *parts: str) -> str:
    return os.path.join(os.fspath(proc_root), str(pid), *parts)


__all__ = ["close_readers", "credentials", "read_as_target"]
