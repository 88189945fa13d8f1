"""Local processes: a bare PID or "host:pid", checked against the run's environment.

Every process of a run carries `PREFECT__FLOW_RUN_ID` (the worker sets it for
the engine; children inherit it), so the run's processes are found by that
variable, whatever `infrastructure_pid` says: children the flow started,
survivors of a dead flow, runs whose `infrastructure_pid` is stale.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.kinds import InfraRef, Location
from prefect_cancel_doctor.model import FoundBy, InfraKind, ProcSnapshot, Role
from prefect_cancel_doctor.proc import procfs
from prefect_cancel_doctor.proc.roles import argv_role, is_supervisor, supervises

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}

#: A process exists but whose run it belongs to cannot be read.
ENVIRON_UNREADABLE = "process {pid} exists but its environment (/proc/{pid}/environ) cannot be read"
#: What reading another user's process needs.
NEEDS_PTRACE = (
    "reading it needs ptrace access to the process (CAP_SYS_PTRACE): run the doctor as root "
    "(sudo -E prefect-cancel-doctor ...) or as the user that runs the flow"
)
#: The same, for a doctor that is root already but was left without CAP_SYS_PTRACE (a container).
_ROOT_NEEDS_PTRACE = (
    "reading it needs ptrace access to the process: the doctor runs as root without CAP_SYS_PTRACE; "
    "give it that capability (in a container: --cap-add SYS_PTRACE)"
)
#: Processes a partial view names, at most: those a run's may be (a flow engine, Runner or hook
#: by its command, grouped by command: all of them on any real host), then any other (Python first).
_PARTIAL_LIKELY_SHOWN = 200
_PARTIAL_OTHERS_SHOWN = 3


def needs_ptrace(pid: int | None = None, proc_root: str = "/proc") -> str:
    """What would let this doctor read process `pid` (or any process): never "run as root" to
    root. A doctor that may read every process and still cannot read `pid` is told what it is."""
    if not procfs.reads_every_process():
        return _ROOT_NEEDS_PTRACE if os.geteuid() == 0 else NEEDS_PTRACE
    if pid is None:
        return "the doctor may read every process already"
    comm = procfs.read_optional_text(Path(proc_root) / str(pid) / "comm") or "?"
    if procfs.is_kernel_thread(pid, proc_root):
        return (
            f"it is a kernel thread ({visible(comm, 60)}): no program runs in it, it is no flow run's process"
        )
    what = f"PID 1, this PID namespace's init ({visible(comm, 60)})" if pid == 1 else "a process"
    return (
        f"it is {what}, which the kernel keeps even from root here (a security module such as AppArmor "
        "or SELinux, or another user namespace's process); no right the doctor could be given changes that"
    )


def partial_view(proc_root: str = "/proc") -> str | None:
    """Why this doctor's view of this host's processes is partial, or None when it is whole.

    Partial: it cannot read every process (no CAP_SYS_PTRACE: not root) and some user
    process's environment is closed to it, or /proc hides other users' processes altogether.
    Such a process may be any run's: its PREFECT__FLOW_RUN_ID cannot be read. The processes
    are named, those whose command is a flow engine, a Runner or Python first.
    """
    if procfs.reads_every_process():
        return None
    unreadable: list[int] = []
    procfs.flow_run_processes(proc_root, unreadable)
    hidden = procfs.hides_processes(proc_root)
    if not unreadable and not hidden:
        return None
    named = sorted(_commands(unreadable, proc_root))
    likely = [(pid, command) for rank, pid, command in named if rank == 0]
    others = [(pid, command) for rank, pid, command in named if rank > 0]
    parts = []
    if named:
        parts.append(
            f"this doctor (user {os.geteuid()}) cannot read the environment of {len(named)} process(es) "
            f"on this host: {_grouped(likely, _PARTIAL_LIKELY_SHOWN, 'flow engine(s), Runner(s) or hook(s)')}"
            f"{'; ' if likely and others else ''}{_listed(others, _PARTIAL_OTHERS_SHOWN, 'other(s)')}"
        )
    if hidden:
        parts.append(f"/proc is mounted with {hidden}: other users' processes are not even listed")
    return (
        "partial view: " + "; ".join(parts) + ". Which run those processes belong to cannot be told, "
        f"so the run's processes may be among them; {needs_ptrace(None, proc_root)}"
    )


def _grouped(processes: list[tuple[int, str]], shown: int, what: str) -> str:
    """How many, then their PIDs by command (`shown` PIDs at most, then "and N more"):
    `3 flow engine(s): python3 -m prefect.engine (812, 960), prefect worker start… (700)`."""
    if not processes:
        return ""
    groups: dict[str, list[int]] = {}
    for pid, command in processes[:shown]:
        groups.setdefault(command, []).append(pid)
    listed = ", ".join(f"{command} ({', '.join(map(str, pids))})" for command, pids in groups.items())
    more = f" and {len(processes) - shown} more" if len(processes) > shown else ""
    return f"{len(processes)} {what}: {listed}{more}"


def _listed(processes: list[tuple[int, str]], shown: int, what: str) -> str:
    """How many, then each (`shown` at most, then "and N more"): `3 flow engine(s): 812 (...), ...`."""
    if not processes:
        return ""
    listed = ", ".join(f"{pid} ({command})" for pid, command in processes[:shown])
    more = f" and {len(processes) - shown} more" if len(processes) > shown else ""
    return f"{len(processes)} {what}: {listed}{more}"


def _commands(pids: list[int], proc_root: str) -> list[tuple[int, int, str]]:
    """Each process's rank (`_likelihood`), PID and command line (world-readable, unlike its
    environment), short: the program's base name and its first arguments."""
    found = []
    for pid in pids:
        argv = procfs.read_cmdline(Path(proc_root) / str(pid) / "cmdline")
        comm = procfs.read_optional_text(Path(proc_root) / str(pid) / "comm") or "?"
        command = visible(" ".join([os.path.basename(argv[0]), *argv[1:]]) if argv else comm)
        short = command if len(command) <= 50 else command[:49] + "…"
        found.append((_likelihood(argv, comm), pid, short))
    return found


def _likelihood(argv: tuple[str, ...], comm: str) -> int:
    """0 for a flow engine, Runner or hook by its command, 1 for Python, 2 for anything else."""
    if argv_role(argv) is not None:
        return 0
    return 1 if "python" in (os.path.basename(argv[0]) if argv else comm) else 2


def is_this_host(host: str | None) -> bool:
    """Whether an `infrastructure_pid`'s host (None or empty: none named) is this host."""
    return not host or host in _LOCAL_HOSTS | {socket.gethostname()}


def is_runner(proc: ProcSnapshot | None) -> bool:
    """True for a Prefect Runner known by its command: a worker or `prefect flow-run execute`.

    (`flow.serve()` runs in any script; `runner_of` recognises it as the parent of an engine.)
    """
    return proc is not None and argv_role(proc.cmdline) is Role.RUNNER


def is_hook_runner(proc: ProcSnapshot) -> bool:
    """True for the subprocess in which a Runner runs `on_cancellation`/`on_crashed` hooks (3.9+)."""
    return argv_role(proc.cmdline) is Role.HOOK


def is_engine(proc: ProcSnapshot) -> bool:
    """True for a Prefect flow engine process (`python -m prefect.engine`)."""
    return argv_role(proc.cmdline) is Role.ENGINE


def runner_of(engine: ProcSnapshot, proc_root: str = "/proc") -> ProcSnapshot | None:
    """The live Runner that launched `engine`, if its parent is one.

    A parent is a Runner only if it is one: a worker or `prefect flow-run execute` by its
    command line, or the process that listens on the engine's control-channel port
    (Prefect 3.9+ passes PREFECT__CONTROL_PORT to the engine; every Runner, `flow.serve()`
    in any script included, listens there). Without a control port (before 3.9) a Python
    parent of an engine is taken for a `flow.serve()` script. A parent that adopted the
    engine after its Runner died (an init, a subreaper such as `tini -s`, `systemd --user`
    or supervisord: `adopter_of`) is none of these, whatever its command line names: an init
    or a supervisor by its program's name or `comm` (`tini -s -- prefect worker start` is the
    worker's parent, never the worker).
    """
    parent = procfs.read_process(engine.ppid, proc_root)
    if parent is not None and argv_role(parent.cmdline) is Role.LAUNCHER:
        parent = procfs.read_process(parent.ppid, proc_root)
    if parent is None or parent.pid == 1 or is_supervisor(parent.comm, parent.cmdline):
        return None
    if is_runner(parent):
        return parent
    if not is_engine(engine):
        return None
    if engine.control_port is not None:
        return parent if listens_on(parent, engine.control_port) else None
    return parent if parent.comm.startswith("python") else None


def adopter_of(engine: ProcSnapshot, proc_root: str = "/proc") -> ProcSnapshot | None:
    """The process that is now the parent of an engine no Runner owns (PID 1, an init or a
    subreaper that adopted it when its Runner died), or None where the parent is gone."""
    parent = procfs.read_process(engine.ppid, proc_root, read_sockets=False)
    if parent is not None and argv_role(parent.cmdline) is Role.LAUNCHER:
        parent = procfs.read_process(parent.ppid, proc_root, read_sockets=False)
    return parent


def listens_on(proc: ProcSnapshot, port: int) -> bool:
    """Whether `proc` listens on loopback TCP `port` (a Runner's control channel)."""
    return any(s.state == "LISTEN" and s.local.rsplit(":", 1)[-1] == str(port) for s in proc.sockets)


def local_workers(pool: str, proc_root: str = "/proc") -> list[int]:
    """PIDs of `prefect worker start` processes of `pool` running on this host (not an init or a
    supervisor that runs one as its child: `tini -s -- prefect worker start --pool P` is no worker)."""
    pids = []
    for entry in Path(proc_root).iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in args]
        if (
            "worker" in words
            and "start" in words
            and not supervises(words)
            and any(w == pool and i and words[i - 1] in ("--pool", "-p") for i, w in enumerate(words))
        ):
            pids.append(int(entry.name))
    return sorted(pids)


def locate_processes(
    run_id: str,
    ref: InfraRef,
    index: dict[str, list[int]],
    proc_root: str = "/proc",
    pool: str | None = None,
    runners_here: Callable[[str], list[int]] | None = None,
    traces: Callable[[], dict[str, str]] | None = None,
) -> Location:
    """Find the run's engine, its children and its Runner on this host.

    When nothing of the run is left, the local workers of its pool are returned
    with role `Role.RUNNER`: an `on_cancellation` hook runs in the Runner, after the
    flow process is gone, and may be what holds the run in Cancelling.
    `runners_here(pool)` finds them (default `local_workers`: one walk of /proc
    a call; a scan of many runs passes a cached one), and `traces()` the files
    that show this host launched a run (default `launch_traces`, likewise).
    """
    here = socket.gethostname()
    if ref.host and ref.host not in _LOCAL_HOSTS | {here}:
        return Location(
            InfraKind.PROCESS,
            f"process {ref.pid} on host {ref.host}",
            unreachable=(
                f"the run's process {ref.pid} runs on host {ref.host!r}, not on this host "
                f"({here}): run the doctor there"
            ),
        )
    notes: list[str] = []
    launched_here: str | None = None
    engine_pid = None
    found_by = FoundBy.INFRASTRUCTURE_PID
    if ref.pid is not None:
        engine_pid, note, readable = _check_pid(run_id, ref.pid, proc_root)
        if note:
            notes.append(note)
        if not readable and not index.get(run_id):
            return Location(
                InfraKind.PROCESS,
                f"local process {ref.pid} (unreadable)",
                unreachable=f"{note}: {needs_ptrace(ref.pid, proc_root)}",
                notes=tuple(notes),
            )
    snapshots = {pid: procfs.read_process(pid, proc_root) for pid in index.get(run_id, ())}
    live = {pid: snap for pid, snap in snapshots.items() if snap is not None and snap.state != "Z"}
    if engine_pid is None:
        engine_pid = next((pid for pid, snap in sorted(live.items()) if is_engine(snap)), None)
        found_by = FoundBy.FLOW_RUN_ID
        if engine_pid is not None and ref.pid is not None:
            notes.append(f"found the flow process {engine_pid} by its PREFECT__FLOW_RUN_ID")
    launcher_pid = None
    if engine_pid in live and argv_role(live[engine_pid].cmdline) is Role.LAUNCHER:
        launcher_pid = engine_pid
        engine_pid = next((pid for pid, snap in sorted(live.items()) if is_engine(snap)), None)
        notes.append(
            f"process {launcher_pid} is `{live[launcher_pid].comm} run`, the launcher Prefect puts in "
            "front of the flow engine when the flow's project declares prefect"
            + (f"; the flow engine is its child {engine_pid}" if engine_pid else "; no engine below it")
        )
    runner = runner_of(live[engine_pid], proc_root) if engine_pid in live else None
    runner_pid = runner.pid if runner else None
    roles: list[tuple[int, Role]] = []
    if engine_pid is not None and engine_pid in live:
        roles.append((engine_pid, Role.ENGINE))
    if launcher_pid is not None:
        roles.append((launcher_pid, Role.LAUNCHER))
    roles.extend(
        (pid, Role.HOOK if is_hook_runner(live[pid]) else Role.CHILD)
        for pid in sorted(live)
        if pid not in (engine_pid, runner_pid, launcher_pid) and not is_runner(live[pid])
    )
    if engine_pid is not None and engine_pid in live:
        description = f"local process {engine_pid}"
    elif roles and all(role == Role.HOOK for _, role in roles):
        description = "the Runner's hook subprocess " + " ".join(str(pid) for pid, _ in roles)
    elif roles:
        description = f"{len(roles)} leftover process(es) on this host"
    else:
        description = "no process of the run on this host"
        partial = partial_view(proc_root)
        if partial is not None:
            # Nothing of the run among the processes this doctor can read is no sign that nothing
            # of it runs: it may be one of those it cannot read. Never "gone" on a partial view.
            trace = (traces or launch_traces)().get(run_id)
            if trace:
                notes.append(f"this host launched the run: {trace} names it")
            return Location(
                InfraKind.PROCESS,
                "no process of the run among those this doctor can read",
                unreachable=partial,
                notes=tuple(notes),
                found_by=found_by,
            )
        if pool:
            workers = runners_here(pool) if runners_here else local_workers(pool, proc_root)
            roles.extend((pid, Role.RUNNER) for pid in workers)
        trace = (traces or launch_traces)().get(run_id)
        if trace:
            notes.append(
                f"this host launched the run: {trace} (Prefect 3.9's workspace supervisor config) names "
                "it, and the worker that launched it removes that file when the run ends: it did not end "
                "cleanly here"
            )
            launched_here = trace
        elif ref.host and ref.pid is not None:  # a process worker's "<host>:<pid>"
            notes.append(
                f"its infrastructure_pid {ref.raw} names this host ({here}): the run was launched here, "
                "and no process of this host, every one of them read, carries its id"
            )
            launched_here = f"infrastructure_pid {ref.raw}"
    return Location(
        InfraKind.PROCESS,
        description,
        tuple(roles),
        runner_pid,
        None,
        tuple(notes),
        found_by=found_by,
        launched_here=launched_here,
    )


def launch_traces() -> dict[str, str]:
    """Run id → the workspace supervisor config on this host that names it.

    A Prefect 3.9 Runner writes `<tmp>/prefect-workspace-attempt-*/supervisor.json` (its
    `flow_run_id`) before it starts a run's process, and removes the directory once the
    run's process has ended, unless the Runner died first. The temporary directory is the
    worker's; this looks in ours and in /tmp.
    """
    found: dict[str, str] = {}
    for root in dict.fromkeys((tempfile.gettempdir(), "/tmp")):
        for config in Path(root).glob("prefect-workspace-attempt-*/supervisor.json"):
            try:
                run_id = json.loads(config.read_text(encoding="utf-8")).get("flow_run_id")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(run_id, str):
                found[run_id] = visible(str(config), 300)
    return found


def _check_pid(run_id: str, pid: int, proc_root: str) -> tuple[int | None, str | None, bool]:
    """Is `pid` this run's process? Never trust a PID that may have been reused.

    Returns the PID if it is the run's, a note if not, and whether its environment was readable.
    """
    snap = procfs.read_process(pid, proc_root)
    if snap is None or snap.state == "Z":
        return None, f"infrastructure_pid {pid} no longer exists", True
    if snap.flow_run_id == run_id:
        return pid, None, True
    if not snap.environ_readable and procfs.reads_every_process():
        # What even a doctor that may read every process cannot read (the host's init behind a
        # security module, another user namespace's process) runs no flow of this host's Prefect.
        return (
            None,
            f"infrastructure_pid {pid} is not the run's process: {needs_ptrace(pid, proc_root)}",
            True,
        )
    if not snap.environ_readable:
        return None, ENVIRON_UNREADABLE.format(pid=pid), False
    cmd = " ".join(snap.cmdline)[:80] or snap.comm
    if snap.flow_run_id is None:
        reused = (
            f"infrastructure_pid {pid} is now another program ({cmd}) without this run's "
            "PREFECT__FLOW_RUN_ID: the PID was reused; not sampled"
        )
        return None, reused, True
    return (
        None,
        f"infrastructure_pid {pid} belongs to another flow run ({snap.flow_run_id}); not sampled",
        True,
    )
