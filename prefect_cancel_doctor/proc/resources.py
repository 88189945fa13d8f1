"""What a blocked call waits on, from the kernel: the syscall's arguments, the fd, its other end.

`/proc/PID/task/TID/syscall` gives the syscall and its arguments; for calls on
a file descriptor, `/proc/PID/fd/N` names what it is (a path, `pipe:[ino]`,
`socket:[ino]`, `anon_inode:[eventfd]`), `fdinfo` its flags (and an epoll's
watched fds), `/proc/PID/net/tcp*` a socket's peer, `mountinfo` a file's
filesystem. A path being opened (`openat`) is read from the process's memory.
Each answer becomes a `Resource` on the thread's `KernelThread`, read once, after
sampling, for the latest dump only.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from pathlib import Path

from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.model import KernelThread, ProcessSample, Resource, ResourceKind
from prefect_cancel_doctor.proc.procfs import PathLike, parse_tcp_table, read_cmdline, read_optional_text

#: Databases usually behind a TCP port (also what makes a blocked read `database`).
DATABASE_PORTS = {5432: "PostgreSQL", 3306: "MySQL", 6379: "Redis", 27017: "MongoDB", 1433: "SQL Server"}
#: Services usually behind a TCP port, for the description of a connection.
_SERVICE_PORTS = {
    **DATABASE_PORTS,
    80: "HTTP",
    443: "HTTPS",
    4200: "Prefect API",
    5672: "RabbitMQ",
    9092: "Kafka",
    11211: "memcached",
}

#: Syscalls whose first argument is the fd they wait on.
_FD_CALLS = frozenset(
    {"read", "readv", "pread64", "recvfrom", "recvmsg", "write", "sendto", "sendmsg", "accept", "accept4"}
    | {"connect", "flock", "fsync", "fdatasync", "epoll_wait", "epoll_pwait", "epoll_pwait2"}
)
_POLL_CALLS = frozenset({"poll", "ppoll"})
_LINK = re.compile(r"^(pipe|socket):\[(\d+)\]$")
_O_ACCMODE = 0o3
_O_WRONLY = 0o1
_O_RDWR = 0o2


def with_resources(sample: ProcessSample, proc_root: PathLike = "/proc") -> ProcessSample:
    """`sample` with each thread of its latest dump told what its blocked syscall waits on."""
    if not sample.dumps:
        return sample
    latest = tuple(
        dataclasses.replace(thread, kernel=_with_resource(sample.pid, thread.kernel, proc_root))
        if thread.kernel is not None
        else thread
        for thread in sample.dumps[-1]
    )
    return dataclasses.replace(sample, dumps=(*sample.dumps[:-1], latest))


def _with_resource(pid: int, kernel: KernelThread, proc_root: PathLike) -> KernelThread:
    try:
        resource = describe(pid, kernel, proc_root)
    except (OSError, ValueError):
        resource = None
    return dataclasses.replace(kernel, resource=resource) if resource else kernel


def describe(pid: int, kernel: KernelThread, proc_root: PathLike = "/proc") -> Resource | None:
    """What `kernel`'s blocked syscall waits on, or None when it does not say."""
    name, args = kernel.syscall_name, kernel.syscall_args
    if not name or not args:
        return None
    if name in _FD_CALLS:
        return _fd(pid, args[0], proc_root, name)
    if name in _POLL_CALLS and args[1] >= 1:
        fd = _read_int(pid, args[0], proc_root)  # struct pollfd: int fd first
        return _fd(pid, fd, proc_root, name) if fd is not None and fd >= 0 else None
    if name in ("openat", "open"):
        address = args[1] if name == "openat" else args[0]
        path = _read_string(pid, address, proc_root)
        return _opening(pid, path, proc_root) if path else None
    if name in ("wait4", "waitid"):
        child = args[1] if name == "waitid" else args[0]
        if 0 < child < 2**22:
            command = _command(child, proc_root)
            return Resource(
                ResourceKind.CHILD, f"waiting for child process {child} ({command})", peer_pids=(child,)
            )
        return Resource(ResourceKind.CHILD, "waiting for any child process to exit")
    return None


def _fd(pid: int, fd: int, proc_root: PathLike, call: str) -> Resource | None:
    if not 0 <= fd < 2**20:
        return None
    base = f"{proc_root}/{pid}"
    target = os.readlink(f"{base}/fd/{fd}")
    link = _LINK.match(target)
    if link and link.group(1) == "pipe":
        writers = _holders(proc_root, target, writing=True, besides=(pid, fd))
        who = ", ".join(f"PID {p} ({_command(p, proc_root)})" for p in writers[:3])
        described = (
            f"reading a pipe whose writer is {who}" if writers else "reading a pipe no process writes to"
        )
        if call in ("write", "sendto", "sendmsg"):
            described = "writing a pipe whose reader does not read"
        return Resource(ResourceKind.PIPE, described, fd=fd, peer_pids=tuple(writers))
    if link:
        return _socket(pid, fd, int(link.group(2)), proc_root)
    if target.startswith("anon_inode:"):
        what = target.removeprefix("anon_inode:").strip("[]")
        if what == "eventpoll":
            watched = _epoll_watched(pid, fd, proc_root)
            return Resource(
                ResourceKind.EPOLL,
                f"waiting on epoll fd {fd} watching {len(watched)} fd(s)"
                + (f" ({', '.join(_fd_label(pid, w, proc_root) for w in watched[:4])})" if watched else ""),
                fd=fd,
            )
        kind = ResourceKind.EVENTFD if what == "eventfd" else ResourceKind.OTHER
        return Resource(kind, f"waiting on {visible(what, 40)} fd {fd}", fd=fd)
    if target.startswith("/"):
        mode = os.stat(f"{base}/fd/{fd}").st_mode
        if stat.S_ISFIFO(mode):
            writers = _holders(proc_root, target, writing=True, besides=(pid, fd))
            return _fifo(target, writers, proc_root, reading=True, fd=fd)
        mount = _mount_type(pid, target, proc_root)
        return Resource(
            ResourceKind.FILE,
            f"{'writing' if call.startswith(('write', 'send', 'fsync', 'fdatasync')) else 'reading'} "
            f"{visible(target, 300)}" + (f" on {mount}" if mount else ""),
            fd=fd,
            path=visible(target, 300),
            mount_type=mount,
        )
    return None


def _opening(pid: int, path: str, proc_root: PathLike) -> Resource | None:
    base = f"{proc_root}/{pid}"
    full = path if path.startswith("/") else os.path.join(os.readlink(f"{base}/cwd"), path)
    try:
        mode = os.stat(f"{base}/root{full}").st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        writers = _holders(proc_root, full, writing=True, besides=(pid, -1))
        return _fifo(full, writers, proc_root, reading=False, fd=None)
    mount = _mount_type(pid, full, proc_root)
    return Resource(
        ResourceKind.FILE,
        f"opening {visible(full, 300)}" + (f" on {mount}" if mount else ""),
        path=visible(full, 300),
        mount_type=mount,
    )


def _fifo(path: str, writers: list[int], proc_root: PathLike, *, reading: bool, fd: int | None) -> Resource:
    shown = visible(path, 300)
    if writers:
        who = ", ".join(f"PID {p} ({_command(p, proc_root)})" for p in writers[:3])
        end = f"whose writer is {who}"
    else:
        end = "which no process has open for writing"
    verb = "reading" if reading else "opening"
    return Resource(
        ResourceKind.FIFO, f"{verb} FIFO {shown}, {end}", fd=fd, path=shown, peer_pids=tuple(writers)
    )


def _socket(pid: int, fd: int, inode: int, proc_root: PathLike) -> Resource:
    for table in ("tcp", "tcp6"):
        text = read_optional_text(Path(_path(proc_root, pid, "net", table))) or ""
        for local, remote, state, _ in parse_tcp_table(text, (inode,)):
            port = int(remote.rsplit(":", 1)[1])
            service = _SERVICE_PORTS.get(port)
            what = f"{remote}" + (f" ({service})" if service else "")
            verb = "listening on" if state == "LISTEN" else f"a TCP connection to {what}, {state}"
            described = f"{verb} {local}" if state == "LISTEN" else verb
            return Resource(ResourceKind.SOCKET, described, fd=fd, peer=remote, service=service)
    unix = read_optional_text(Path(_path(proc_root, pid, "net", "unix"))) or ""
    for line in unix.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 7 and fields[6] == str(inode):
            path = visible(fields[7], 300) if len(fields) > 7 else None
            return Resource(
                ResourceKind.UNIX_SOCKET,
                f"a Unix socket{f' {path}' if path else ''}",
                fd=fd,
                path=path,
            )
    return Resource(ResourceKind.SOCKET, f"a socket (fd {fd})", fd=fd)


def _holders(proc_root: PathLike, target: str, *, writing: bool, besides: tuple[int, int]) -> list[int]:
    """PIDs holding an fd that links to `target` (opened for writing, if asked), but `besides`."""
    found = []
    root = os.fspath(proc_root)
    for entry in os.scandir(root):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            fds = os.listdir(f"{root}/{pid}/fd")
        except OSError:
            continue
        for name in fds:
            if (pid, int(name)) == besides:
                continue
            try:
                if os.readlink(f"{root}/{pid}/fd/{name}") != target:
                    continue
                flags = _fd_flags(f"{root}/{pid}/fdinfo/{name}")
            except OSError:
                continue
            if not writing or flags & _O_ACCMODE in (_O_WRONLY, _O_RDWR):
                found.append(pid)
                break
    return found


def _fd_flags(fdinfo: str) -> int:
    with open(fdinfo) as handle:
        for line in handle:
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    return 0


def _epoll_watched(pid: int, fd: int, proc_root: PathLike) -> list[int]:
    text = read_optional_text(Path(_path(proc_root, pid, "fdinfo", str(fd)))) or ""
    return [int(line.split()[1]) for line in text.splitlines() if line.startswith("tfd:")]


def _fd_label(pid: int, fd: int, proc_root: PathLike) -> str:
    try:
        return f"{fd}: {visible(os.readlink(_path(proc_root, pid, 'fd', str(fd))), 80)}"
    except OSError:
        return str(fd)


def _mount_type(pid: int, path: str, proc_root: PathLike) -> str | None:
    """The filesystem type of the mount holding `path`, as the process sees its mounts."""
    best, kind = "", None
    for line in (read_optional_text(Path(_path(proc_root, pid, "mountinfo"))) or "").splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        mount_point = fields[4]
        fs_type = line.split(" - ", 1)[1].split()[0]
        inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, fs_type
    return visible(kind, 40) if kind else None


def _command(pid: int, proc_root: PathLike) -> str:
    return " ".join(read_cmdline(Path(_path(proc_root, pid, "cmdline"))))[:80] or "?"


def _read_int(pid: int, address: int, proc_root: PathLike) -> int | None:
    with open(_path(proc_root, pid, "mem"), "rb", buffering=0) as memory:
        memory.seek(address)
        raw = memory.read(4)
    return int.from_bytes(raw, "little", signed=True) if len(raw) == 4 else None


def _read_string(pid: int, address: int, proc_root: PathLike, limit: int = 4096) -> str | None:
    """A NUL-terminated string at `address` in the process's memory."""
    if not address:
        return None
    with open(_path(proc_root, pid, "mem"), "rb", buffering=0) as memory:
        memory.seek(address)
        raw = memory.read(limit)
    end = raw.find(b"\0")
    return os.fsdecode(raw[: end if end >= 0 else len(raw)]) or None


def _path(proc_root: PathLike, pid: int, *parts: str) -> str:
    return "/".join((os.fspath(proc_root), str(pid), *parts))


__all__ = ["describe", "with_resources"]
