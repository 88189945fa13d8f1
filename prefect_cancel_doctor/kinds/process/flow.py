"""`inspect --pid`: is this process a Prefect flow at all?

A process is taken for a flow when it, or one of its descendants, is Prefect's
flow engine, a Runner or a hook subprocess (by command line), or carries a
`PREFECT__FLOW_RUN_ID`; or when its stacks show Prefect's flow engine (a flow
called directly from a script carries no run id). Anything else — a web
server, a plain Python script, a shell — is not diagnosed as a flow: the doctor
says so, rather than give a verdict about cancellation for something Prefect
never ran.
"""

from __future__ import annotations

from pathlib import Path

from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.errors import TargetError
from prefect_cancel_doctor.model import Report, SampleFailure
from prefect_cancel_doctor.proc import procfs
from prefect_cancel_doctor.proc.roles import argv_role

MAX_DESCENDANTS = 256
#: Files of Prefect's flow engine, as they end in a stack.
_ENGINE_FILES = ("prefect/flow_engine.py", "prefect/engine.py")


def prefect_in_tree(pid: int, proc_root: str = "/proc") -> bool | None:
    """True when `pid` or a descendant is a Prefect engine, Runner or hook, or carries a run id;
    None when an environment could not be read (then nobody can tell from /proc)."""
    queue: list[int] = [pid]
    seen: set[int] = set()
    unsure = False
    while queue and len(seen) < MAX_DESCENDANTS:
        current = queue.pop(0)
        if current in seen:
            continue
        seen.add(current)
        snap = procfs.read_process(current, proc_root, read_sockets=False)
        if snap is None:
            continue
        if snap.flow_run_id or argv_role(snap.cmdline) is not None:
            return True
        unsure = unsure or not snap.environ_readable
        queue.extend(snap.children)
    return None if unsure else False


def runs_flow_engine(report: Report) -> bool | None:
    """True when a sampled stack goes through Prefect's flow engine; None when nothing could be
    sampled for a reason other than the process not being Python."""
    sampled = False
    unsure = False
    for diagnosis in report.runs:
        for process in diagnosis.target.processes if diagnosis.target else ():
            if process.dumps:
                sampled = True
            elif process.python and process.failure not in (SampleFailure.NOT_PYTHON, SampleFailure.GONE):
                unsure = True  # a Python process that could not be read (permissions, a timeout)
            for dump in process.dumps:
                for thread in dump:
                    if any(f.filename.endswith(_ENGINE_FILES) for f in thread.frames):
                        return True
    return None if unsure and not sampled else False


def ensure_sampleable(pid: int, proc_root: str = "/proc") -> None:
    """`TargetError` (exit 2) for a process the doctor never samples, even with --any-process:
    a kernel thread (no program runs in it), and PID 1, this PID namespace's init, unless it is
    a Prefect flow itself (a container's flow engine or the shell before it, seen from a debug
    container sharing its PIDs: PREFECT__FLOW_RUN_ID in its environment, or its command). Said
    for what it is: no "run as root" for what root cannot read either."""
    comm = visible(procfs.read_optional_text(Path(proc_root) / str(pid) / "comm") or "?", 60)
    if procfs.is_kernel_thread(pid, proc_root):
        raise TargetError(
            f"process {pid} is a kernel thread ({comm}): no program, and no Prefect flow, runs in it",
            hint=_FIND_THE_FLOW,
        )
    if pid != 1:
        return
    snap = procfs.read_process(pid, proc_root, read_sockets=False)
    if snap is not None and (snap.flow_run_id or argv_role(snap.cmdline) is not None):
        return
    raise TargetError(
        f"PID 1 is this PID namespace's init ({comm}), not a Prefect flow: the doctor does not sample it",
        hint=_FIND_THE_FLOW,
    )


_FIND_THE_FLOW = (
    "point --pid at the flow's process (`pgrep -af prefect.engine`), or diagnose the run by id or name "
    "with `prefect-cancel-doctor diagnose RUN`"
)


def ensure_flow(pid: int, report: Report, proc_root: str = "/proc") -> None:
    """`TargetError` (exit 2) when process `pid` is certainly not a Prefect flow."""
    if prefect_in_tree(pid, proc_root) is not False:
        return
    if runs_flow_engine(report) is not False:
        return
    raise TargetError(
        f"process {pid} is not a Prefect flow: neither it nor its child processes run Prefect's "
        "flow engine or a Runner, carry a PREFECT__FLOW_RUN_ID, or show the flow engine in their stacks",
        hint="point --pid at the flow's process (`pgrep -af prefect.engine`), diagnose the run by id or "
        "name with `prefect-cancel-doctor diagnose RUN`, or pass --any-process to sample it anyway",
    )


__all__ = ["ensure_flow", "ensure_sampleable", "prefect_in_tree", "runs_flow_engine"]
