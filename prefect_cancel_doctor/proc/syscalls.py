"""Names of the syscalls a blocked thread is usually sitting in.

Only the calls that tell why a thread waits are listed; `/proc/PID/task/T/syscall`
gives the number, and the numbering depends on the architecture.
"""

from __future__ import annotations

import platform

_X86_64 = {
    0: "read",
    1: "write",
    2: "open",
    3: "close",
    7: "poll",
    17: "pread64",
    19: "readv",
    23: "select",
    24: "sched_yield",
    34: "pause",
    35: "nanosleep",
    42: "connect",
    43: "accept",
    44: "sendto",
    45: "recvfrom",
    46: "sendmsg",
    47: "recvmsg",
    61: "wait4",
    73: "flock",
    74: "fsync",
    75: "fdatasync",
    128: "rt_sigtimedwait",
    130: "rt_sigsuspend",
    202: "futex",
    230: "clock_nanosleep",
    232: "epoll_wait",
    247: "waitid",
    257: "openat",
    270: "pselect6",
    271: "ppoll",
    281: "epoll_pwait",
    288: "accept4",
    441: "epoll_pwait2",
    449: "futex_waitv",
}

# aarch64 uses the generic table (asm-generic/unistd.h): no poll, select or epoll_wait.
_AARCH64 = {
    22: "epoll_pwait",
    32: "flock",
    56: "openat",
    57: "close",
    63: "read",
    64: "write",
    67: "pread64",
    72: "pselect6",
    73: "ppoll",
    82: "fsync",
    83: "fdatasync",
    95: "waitid",
    98: "futex",
    101: "nanosleep",
    115: "clock_nanosleep",
    124: "sched_yield",
    133: "rt_sigsuspend",
    137: "rt_sigtimedwait",
    202: "accept",
    203: "connect",
    206: "sendto",
    207: "recvfrom",
    211: "sendmsg",
    212: "recvmsg",
    242: "accept4",
    260: "wait4",
    441: "epoll_pwait2",
    449: "futex_waitv",
}

_TABLES = {"x86_64": _X86_64, "amd64": _X86_64, "aarch64": _AARCH64, "arm64": _AARCH64}


def syscall_name(number: int | None, machine: str | None = None) -> str | None:
    """The name of syscall `number` on `machine` (default: this host), or None if unknown."""
    if number is None:
        return None
    table = _TABLES.get((machine or platform.machine()).lower(), {})
    return table.get(number)
