"""Read a file of a target process only as that process could read it.

A frame's filename is whatever the target's code says it is: `compile(src,
"/root/secret.txt", "exec")` makes a frame "in" a root-only file. A doctor running
as root that opened the name itself would read that file for an unprivileged
flow and print, publish and store its lines (a confused deputy). So the file is
opened with the target's credentials, inside the target's filesystem view, or
not at all:

- a forked child of the doctor enters the target's root (`/proc/PID/root`:
  `fchdir` + `chroot`, so that absolute symlinks and `..` resolve inside the
  target's mount namespace, not the doctor's), drops to the target's file-system
  uid, gid and supplementary groups (from `/proc/PID/status`), and only then
  opens the name; the kernel itself decides, with everything it weighs (mode
  bits, every directory's search bit, ACLs, security modules), exactly as for
  the target. A uid other than 0 keeps no capability after `setresuid`, so no
  `CAP_DAC_OVERRIDE` is left to the child; a target running as uid 0 gets a
  child with root's rights, as it has them itself (a root target with fewer
  capabilities, e.g. a container's, may be shown a file it could not open: its
  own root filesystem's, never the host's);
- the child closes every descriptor it inherited but its pipe first, reads a
  regular file only (a FIFO or a device would block or never end), at most
  `limit + 1` bytes, and is killed after `_DEADLINE_SECONDS` (a hung mount);
- a doctor that is not root cannot take another user's credentials: it reads
  only for a target whose credentials are its own, through `/proc/PID/root`
  (nothing it could not read as itself), and nothing otherwise.

Why a forked child rather than checking the file's mode bits from the doctor:
a mode check must also walk every directory's search bit, follow symlinks the
way the target would (through its root, not the doctor's), and cannot see ACLs
or security modules; the kernel does all of it for free. A fork of the doctor
costs about a millisecond, and each file is read once per process (the callers
cache). The child runs only `os` calls, no lock another thread may hold.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import stat
import time
from typing import TypeAlias

PathLike: TypeAlias = "str | os.PathLike[str]"
#: File-system uid, gid and supplementary groups.
Credentials: TypeAlias = "tuple[int, int, frozenset[int]]"

#: A read that takes longer than this (a hung network mount) is given up: no source.
_DEADLINE_SECONDS = 5.0
#: The child's exit codes.
_READ, _REFUSED = 0, 3


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
    working directory) read with the target's credentials; None when it could not have read it,
    it is no regular file, or the target is gone."""
    creds = credentials(pid, proc_root)
    if creds is None or not filename or "\0" in filename:
        return None
    if os.geteuid() != 0:
        return _read_as_self(pid, filename, limit, proc_root) if _same(creds, _own_credentials()) else None
    return _read_in_child(pid, filename, limit, proc_root, creds)


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
    chunks, size = [], 0
    while size <= limit and (chunk := os.read(fd, min(65536, limit + 1 - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _read_in_child(
    pid: int, filename: str, limit: int, proc_root: PathLike, creds: Credentials
) -> bytes | None:
    reader, writer = os.pipe()
    try:
        child = os.fork()
    except OSError:
        os.close(reader)
        os.close(writer)
        return None
    if child == 0:  # pragma: no cover - runs in the forked child, reported through its exit code
        code = _REFUSED
        try:
            code = _child(pid, filename, limit, proc_root, creds, writer)
        finally:
            os._exit(code)
    os.close(writer)
    data = _drain(reader, limit)
    os.close(reader)
    status = _reap(child, killed=data is None)
    if data is None or status is None or not os.WIFEXITED(status) or os.WEXITSTATUS(status) != _READ:
        return None
    return data


def _child(
    pid: int,
    filename: str,
    limit: int,
    proc_root: PathLike,
    creds: Credentials,
    writer: int,
) -> int:  # pragma: no cover - runs in the forked child
    # Nothing the doctor holds (API connections, files) stays reachable, e.g. through /proc/self/fd.
    os.closerange(0, writer)
    os.closerange(writer + 1, os.sysconf("SC_OPEN_MAX"))
    relative = not os.path.isabs(filename)
    cwd = os.open(_path(proc_root, pid, "cwd"), os.O_RDONLY | os.O_DIRECTORY) if relative else None
    root = os.open(_path(proc_root, pid, "root"), os.O_RDONLY | os.O_DIRECTORY)
    os.fchdir(root)
    os.chroot(".")
    os.close(root)
    uid, gid, groups = creds
    os.setgroups(list(groups))
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    try:
        fd = os.open(filename, _OPEN_FLAGS, dir_fd=cwd)
    except OSError:
        return _REFUSED
    data = _read_regular(fd, limit)
    if data is None:
        return _REFUSED
    view = memoryview(data)
    while view:
        view = view[os.write(writer, view) :]
    return _READ


def _drain(reader: int, limit: int) -> bytes | None:
    """What the child wrote until it closed the pipe; None past the deadline."""
    deadline = time.monotonic() + _DEADLINE_SECONDS
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([reader], [], [], left)[0]:
            return None
        chunk = os.read(reader, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit + 1:
            return None


def _reap(child: int, *, killed: bool) -> int | None:
    """The child's wait status; a child given up on is killed first (and left, if the kernel
    holds it in an uninterruptible read, to be reaped by a later call's WNOHANG or at exit)."""
    if killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 1.0
    while True:
        try:
            done, status = os.waitpid(child, os.WNOHANG if killed else 0)
        except ChildProcessError:
            return None
        if done:
            return status
        if time.monotonic() > deadline:
            return None
        time.sleep(0.01)


def _path(proc_root: PathLike, pid: int, *parts: str) -> str:
    return os.path.join(os.fspath(proc_root), str(pid), *parts)


__all__ = ["credentials", "read_as_target"]
