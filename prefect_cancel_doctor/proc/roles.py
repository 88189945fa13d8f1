"""What a process is to its run, told by its command line: one classification for hosts and containers.

Local processes (`prefect_cancel_doctor.kinds.process.locate`), a container's
processes listed by the Docker engine (`prefect_cancel_doctor.kinds.docker.locate`)
and those a sidecar reads inside the container's PID namespace
(`prefect_cancel_doctor.kinds.docker.sidecar`) all go through `argv_role`; a
container's process tree goes through `assign_roles`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence

from prefect_cancel_doctor.model import Role

_SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "ksh", "busybox"})
#: The script a Runner (Prefect 3.9+) runs the engine (``... engine ENTRYPOINT``) and its
#: `on_cancellation`/`on_crashed` hooks (``... hook``) with.
_BOOTSTRAP = "_workspace_runtime_bootstrap"
#: The bootstrap running the flow engine (its other mode is "hook").
_BOOTSTRAP_ENGINE = f"{_BOOTSTRAP}.py engine"
#: Prefect 3.9's workspace supervisor: it runs the deployment's pull steps, then execs the engine.
_SUPERVISOR = "prefect.runner._workspace_supervisor"
#: Programs that start the engine as their child and wait for it.
_LAUNCHERS = frozenset({"uv"})
#: Inits and supervisors: they start a program (a worker, the engine) as their child and reap
#: what is orphaned below them (PID 1, or PR_SET_CHILD_SUBREAPER: `tini -s`, `systemd --user`).
#: One of them is never the program it starts, whatever its command line names: an adopter of a
#: flow process whose Runner died, never that Runner. Known by the basename of argv[0] (or by
#: `comm`, its first 15 characters); supervisord and circusd, which are Python, also by the script
#: their interpreter runs.
INITS = frozenset(
    {
        "init",
        "systemd",
        "tini",
        "tini-static",
        "docker-init",
        "dumb-init",
        "catatonit",
        "containerd-shim",
        "conmon",
        "s6-svscan",
        "s6-supervise",
        "runsvdir",
        "runsv",
        "runit",
        "supervisord",
        "circusd",
    }
)
#: Variants shipped under longer names (`tini-static-amd64`, `containerd-shim-runc-v2`).
_INIT_PREFIXES = ("tini-", "containerd-shim")
#: Programs that run a command as their child and wait for it, in its place (never Prefect).
_WRAPPERS = frozenset(
    {"sudo", "doas", "su", "runuser", "timeout", "setsid", "flock", "strace", "unshare", "nsenter"}
)


def argv_role(argv: Sequence[str]) -> Role | None:
    """The role a command line names, or None (any other program).

    - `Role.ENGINE`: the flow engine, ``python -m prefect.engine`` (or
      ``.../prefect/engine.py`` run as a script, or Prefect 3.9's
      ``.../_workspace_runtime_bootstrap.py engine ENTRYPOINT``), and the workspace
      supervisor (``python -m prefect.runner._workspace_supervisor``, 3.9+), which
      prepares the run's workspace and then execs the engine in the same PID
      (`preparing_workspace` tells the two apart);
    - `Role.LAUNCHER`: ``uv run ... <engine command>``, the launcher Prefect 3.9
      puts in front of the engine when the flow's project declares prefect and
      `uv` is on PATH (`prefect/runner/_uv_command.py`): the run's PID is uv's, the
      engine is its child;
    - `Role.HOOK`: the subprocess in which a Runner runs ``on_cancellation`` /
      ``on_crashed`` hooks (``.../_workspace_runtime_bootstrap.py hook``);
    - `Role.RUNNER`: a Runner known by its command, ``prefect flow-run execute``
      or a worker, ``prefect worker start`` (``flow.serve()`` runs in any script:
      `locate.process.runner_of` knows it as the parent of an engine).

    A shell whose ``-c`` script mentions one of them is none of them: it is the shell. So is an
    init, a supervisor or a wrapper that runs one as its child (``tini -s -- prefect worker
    start``, ``dumb-init -- python -m prefect.engine``, ``sudo prefect worker start``: `supervises`):
    the Runner or the engine is its child, and it only adopts the flow process once its Runner died.
    """
    if not argv or os.path.basename(argv[0]) in _SHELLS or supervises(argv):
        return None
    words = tuple(argv)
    runs_engine = (
        "prefect.engine" in words
        or _SUPERVISOR in words
        or any(w.endswith("prefect/engine.py") for w in words)
        or any(f"{os.path.basename(w)} {mode}" == _BOOTSTRAP_ENGINE for w, mode in itertools.pairwise(words))
    )
    if runs_engine:
        launcher = os.path.basename(argv[0]) in _LAUNCHERS and len(words) > 1 and words[1] == "run"
        return Role.LAUNCHER if launcher else Role.ENGINE
    if "hook" in words and any(_BOOTSTRAP in w for w in words):
        return Role.HOOK
    pairs = set(itertools.pairwise(words))
    runs_prefect = any("prefect" in w for w in words)
    if runs_prefect and (("flow-run", "execute") in pairs or ("worker", "start") in pairs):
        return Role.RUNNER
    return None


def is_init_name(name: str) -> bool:
    """Whether a program's name (argv[0]'s basename, or `comm`) is an init or a supervisor (`INITS`)."""
    return name in INITS or name.startswith(_INIT_PREFIXES)


def supervises(argv: Sequence[str]) -> bool:
    """Whether a command line is an init, a supervisor or a wrapper that runs its command as a child:
    by argv[0]'s basename, or for a Python interpreter the script it runs (supervisord, circusd).
    Such a process is never a Runner or an engine, whatever its arguments name."""
    if not argv:
        return False
    program = os.path.basename(argv[0])
    if program.startswith("python") and len(argv) > 1 and not argv[1].startswith("-"):
        program = os.path.basename(argv[1])
    return is_init_name(program) or program in _WRAPPERS


def is_supervisor(comm: str, argv: Sequence[str]) -> bool:
    """Whether a process is an init, a supervisor or a wrapper: by its command line (`supervises`),
    or by its `comm` where the command line names none (unreadable, or rewritten)."""
    return supervises(argv) or is_init_name(comm)


def preparing_workspace(argv: Sequence[str]) -> bool:
    """True for Prefect 3.9's workspace supervisor before it execs the engine (pull steps run)."""
    return _SUPERVISOR in argv


def assign_roles(
    processes: Iterable[tuple[int, int, Sequence[str]]], pid1: int, *, is_pid1: bool = True
) -> tuple[list[tuple[int, Role]], int | None]:
    """Roles of a container's processes: (pid, role) for PID 1 and its descendants, and the Runner.

    `processes` are (pid, ppid, argv). PID 1 is `Role.ENGINE` when it is the flow
    engine, the Runner when it is `prefect flow-run execute`, `Role.PID1`
    otherwise (a shell, tini, a custom entrypoint). Below it the first engine is
    `Role.ENGINE`, a Runner is the Runner, and everything else (a hook
    subprocess included) is `Role.CHILD`. The Runner is not in the list (it is
    returned apart, as for local processes); processes that do not descend from
    PID 1 (`docker exec` sessions) are left out.

    `is_pid1=False`: the container's main process `pid1` is not PID 1 of its namespace (a pod
    with shareProcessNamespace, whose PID 1 is /pause), so it is no `Role.PID1` (whose unhandled
    signals the kernel drops) but `Role.CHILD` unless it is the engine or the Runner.
    """
    table = {pid: (ppid, argv) for pid, ppid, argv in processes}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    roles: list[tuple[int, Role]] = []
    runner: int | None = None
    engine_seen = False
    queue = [pid1] if pid1 in table else []
    while queue:
        pid = queue.pop(0)
        kind = argv_role(table[pid][1])
        if kind is Role.RUNNER and runner is None:
            runner = pid
        elif kind is Role.ENGINE and not engine_seen:
            engine_seen = True
            roles.append((pid, Role.ENGINE))
        else:
            roles.append((pid, Role.PID1 if pid == pid1 and is_pid1 else Role.CHILD))
        queue.extend(sorted(children.get(pid, ())))
    return roles, runner


_WORKER_FLAGS = {
    "--pool": "pool",
    "-p": "pool",
    "--name": "name",
    "-n": "name",
    "--type": "type",
    "-t": "type",
}


def worker_options(argv: list[str]) -> dict[str, str] | None:
    """`--pool`, `--name`, `--type` of a `prefect worker start` command line; None for any other
    (an init or a supervisor that runs the worker as its child included: `supervises`)."""
    if supervises(argv):
        return None
    words = [w.rsplit("/", 1)[-1] for w in argv[:4]]
    if not any(w == "worker" and i + 1 < len(argv) and argv[i + 1] == "start" for i, w in enumerate(argv)):
        return None
    if not any("prefect" in w for w in words):
        return None
    found: dict[str, str] = {}
    for i, word in enumerate(argv):
        flag, equals, value = word.partition("=")
        if flag in _WORKER_FLAGS and equals:
            found[_WORKER_FLAGS[flag]] = value
        elif word in _WORKER_FLAGS and i + 1 < len(argv):
            found[_WORKER_FLAGS[word]] = argv[i + 1]
    return found


__all__ = [
    "INITS",
    "argv_role",
    "assign_roles",
    "is_init_name",
    "preparing_workspace",
    "supervises",
    "worker_options",
]
