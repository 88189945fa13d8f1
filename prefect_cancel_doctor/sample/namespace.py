"""Sampling from inside a target's PID namespace, shared by the Docker sidecar and the Kubernetes
ephemeral container: the POSIX shell script they run (`SCRIPT`: the kernel's view of every process,
`py-spy dump`, the interpreter probe), and the `ProcessSample` records rebuilt from its output with
the same `procfs` readers as the host sampler (`build_sample`), with the user-code sources filled in."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.core.prefect_names import FLOW_RUN_ENV
from prefect_cancel_doctor.core.redact import redact_code
from prefect_cancel_doctor.model import Frame, ProcessSample, ProcSnapshot, Role, ThreadSample
from prefect_cancel_doctor.proc import interpreter, procfs
from prefect_cancel_doctor.proc.roles import assign_roles
from prefect_cancel_doctor.sample import excepts, handler
from prefect_cancel_doctor.sample.pyspy import (
    NativeUnavailable,
    NotPython,
    SamplerError,
    classify_error,
    parse_dump,
)

#: Label on every sidecar; its value is the target container's id.

#: The environment variable that carries proc/interpreter.py's text to the script.
PROBE_ENV = "PCD_PROBE"


_MARK = b"\n@@PCD "


PROCESS_HEADER = re.compile(r"^Process (\d+): (.*)$", re.MULTILINE)


MAX_SOURCE_FILES = 20


# POSIX sh; only builtins except py-spy itself, `cat` (for cmdline, if present)
# and `sleep` (between rounds, if present). Arguments: py-spy path, rounds,
# interval, then py-spy's extra flags. Each block starts with "\n@@PCD <header>\n".
# In the last round, each process py-spy could dump is probed with its own
# interpreter when $PCD_PROBE holds proc/interpreter.py (`probe_env`): under
# `chroot /proc/N/root` (the target's libraries; needs chroot and CAP_SYS_CHROOT),
# else straight; the dump goes in on stdin.
SCRIPT = r"""
Y=$1; ROUNDS=$2; INTERVAL=$3; shift 3
NATIVE=; FLAGS=
for a in "$@"; do if [ "$a" = --native ]; then NATIVE=1; else FLAGS="$FLAGS $a"; fi; done
ME=$$
CAT=; command -v cat >/dev/null 2>&1 && CAT=1
SLEEP=; command -v sleep >/dev/null 2>&1 && SLEEP=1
mark() { printf '\n@@PCD %s\n' "$*"; }
probe() {
  printf '%s' "$2" | chroot "/proc/$1/root" "/proc/$1/exe" -I -S -c "$PCD_PROBE" "$1" 2>/dev/null \
    || printf '%s' "$2" | "/proc/$1/exe" -I -S -c "$PCD_PROBE" "$1" 2>&1
}
show() {
  [ -r "$1" ] || return 0
  l=
  while IFS= read -r l || [ -n "$l" ]; do printf '%s\n' "$l"; l=; done < "$1" 2>/dev/null
}
r=1
while [ "$r" -le "$ROUNDS" ]; do
  for d in /proc/[0-9]*; do
    n=${d#/proc/}
    [ "$n" = "$ME" ] && continue
    [ -d "$d" ] || continue
    if [ "$r" = 1 ]; then
      mark "file 0 $n/cmdline"
      if [ -n "$CAT" ]; then cat "$d/cmdline" 2>/dev/null; else show "$d/cmdline"; fi
      mark "file 0 $n/comm"; show "$d/comm"
    fi
    mark "file $r $n/stat"; show "$d/stat"
    mark "file $r $n/status"; show "$d/status"
    for t in "$d"/task/[0-9]*; do
      tid=${t##*/}
      for f in stat status comm wchan syscall; do mark "file $r $n/task/$tid/$f"; show "$t/$f"; done
    done
    # --native (its unwinding pauses the target ~10x a plain dump) in the first round only
    if [ "$r" = 1 ] && [ -n "$NATIVE" ]; then
      mode=native; out=$("$Y" dump --pid "$n" --json --native $FLAGS 2>&1); rc=$?
    else
      mode=full; out=$("$Y" dump --pid "$n" --json $FLAGS 2>&1); rc=$?
    fi
    mark "dump $r $n $mode $rc"; printf '%s\n' "$out"
    if [ "$rc" != 0 ] && { [ "$mode" = native ] || [ -n "$FLAGS" ]; }; then
      out=$("$Y" dump --pid "$n" --json 2>&1); rc=$?
      mark "dump $r $n plain $rc"; printf '%s\n' "$out"
    fi
    if [ "$r" = "$ROUNDS" ] && [ "$rc" = 0 ] && [ -n "$PCD_PROBE" ]; then
      p=$(probe "$n" "$out"); mark "probe $n $?"; printf '%s\n' "$p"
    fi
  done
  r=$((r + 1))
  if [ "$r" -le "$ROUNDS" ] && [ -n "$SLEEP" ]; then sleep "$INTERVAL"; fi
done
mark end
"""


@functools.cache
def probe_source() -> str:
    """The text of proc/interpreter.py, which the script runs with the target's interpreter."""
    return Path(interpreter.__file__).read_text(encoding="utf-8")


@dataclass(frozen=True)
class ContainerSample:
    """A container's processes sampled from a sidecar (PIDs are the container's namespace PIDs)."""

    #: PID 1 (PID1 or ENGINE), the engine and its children, as the host sampler returns them.
    processes: tuple[ProcessSample, ...]
    #: The Runner (`prefect flow-run execute`), read but not sampled, as for local runs.
    runner: ProcSnapshot | None
    #: "script" (one sidecar, kernel view included) or "pyspy-only" (no /bin/sh in the image).
    method: str
    #: What went wrong or was left out along the way.
    notes: tuple[str, ...] = ()
    #: Wall-clock seconds spent, sidecars included.
    seconds: float = 0.0
    #: path → text of the user-code files the probe read inside the target's namespace.
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclass
class ScriptOutput:
    """The sidecar script's output, parsed: /proc files per round and py-spy dumps."""

    #: round → relative path ("<pid>/task/<tid>/stat") → content; round 0 holds cmdline and comm.
    files: dict[int, dict[str, bytes]] = dataclasses.field(default_factory=dict)
    #: (round, pid) → [(mode "full"|"plain", exit code, output)].
    dumps: dict[tuple[int, int], list[tuple[str, int, str]]] = dataclasses.field(default_factory=dict)
    #: pid → what the interpreter probe printed (its last round).
    probes: dict[int, str] = dataclasses.field(default_factory=dict)
    finished: bool = False


def parse_script_output(data: bytes) -> ScriptOutput:
    """Split the script's stdout at its markers."""
    parsed = ScriptOutput()
    for block in data.split(_MARK)[1:]:
        header, _, body = block.partition(b"\n")
        words = header.decode("utf-8", "replace").split()
        if not words:
            continue
        if words[0] == "file" and len(words) == 3:
            parsed.files.setdefault(int(words[1]), {})[words[2]] = body
        elif words[0] == "dump" and len(words) == 5:
            key = (int(words[1]), int(words[2]))
            parsed.dumps.setdefault(key, []).append(
                (words[3], int(words[4]), body.decode("utf-8", "replace"))
            )
        elif words[0] == "probe" and len(words) == 3 and words[2] == "0":
            parsed.probes[int(words[1])] = body.decode("utf-8", "replace")
        elif words[0] == "end":
            parsed.finished = True
    return parsed


#: Free space /dev/shm must have to hold the rebuilt /proc trees (a few MB each, one per target).
SHM_MIN_FREE = 256 * 2**20


def scratch_root() -> str | None:
    """Where `build_sample`'s trees go: memory (/dev/shm) when it has room, else the temp dir (None).

    A round of a Prefect engine (~50 threads) is ~1,300 small files, and a scan of 20 pods writes
    and reads 25,000 of them: on a disk their creation was 5 s of the scan's CPU."""
    try:
        info = os.statvfs("/dev/shm")
    except OSError:
        return None
    room = info.f_bavail * info.f_frsize >= SHM_MIN_FREE
    return "/dev/shm" if room and os.access("/dev/shm", os.W_OK | os.X_OK) else None


def build_sample(
    collected: ScriptOutput, scratch: Path, flow_run_id: str | None, root: int = 1
) -> ContainerSample:
    """The container's processes below `root` (its PID 1; in a pod sharing one PID namespace, the
    container's main process, PID 1 being /pause), as ProcessSamples built from the script's rounds."""
    rounds = sorted(r for r in collected.files if r > 0)
    snapshots: dict[int, dict[int, ProcSnapshot]] = {}
    for number in rounds:
        base = scratch / str(number)
        for relative, content in {**collected.files.get(0, {}), **collected.files[number]}.items():
            path = base / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(fix_cmdline(relative, content))
        for pid_dir in base.iterdir():
            if flow_run_id:
                (pid_dir / "environ").write_bytes(f"{FLOW_RUN_ENV}={flow_run_id}\0".encode())
        snapshots[number] = {
            snap.pid: snap
            for pid in sorted(int(p.name) for p in base.iterdir() if p.name.isdigit())
            if (snap := procfs.read_process(pid, base)) is not None
        }
    last = snapshots[rounds[-1]] if rounds else {}
    first = snapshots[rounds[0]] if rounds else {}
    everyone = {**first, **last}
    roles, runner_pid = assign_roles(
        ((s.pid, s.ppid, s.cmdline) for s in everyone.values()), root, is_pid1=root == 1
    )
    processes = []
    sources: dict[str, str] = {}
    for pid, role in _engine_by_stack(roles, collected):
        dumps: list[tuple[ThreadSample, ...]] = []
        errors: list[str] = []
        used_native = native_failed = False
        python = True
        for number in rounds:
            attempts = collected.dumps.get((number, pid), [])
            threads, error, was_native = _round_dump(attempts)
            native_failed = native_failed or any(m == "native" and code != 0 for m, code, _ in attempts)
            if error is not None:
                if isinstance(error, NotPython):
                    python = False
                    break
                if str(error) not in errors:
                    errors.append(str(error))
                continue
            used_native = used_native or was_native
            snap = snapshots[number].get(pid)
            dumps.append(_merge(threads, snap) if snap is not None else threads)
        if native_failed and not used_native:
            errors.append("py-spy --native failed in the sidecar; fell back to plain dumps")
        probe = handler.parse_probe(collected.probes[pid]) if pid in collected.probes else None
        if probe is not None:
            sources.update(probe.sources)
        processes.append(
            ProcessSample(
                pid=pid,
                role=role,
                proc=last.get(pid) or first.get(pid),
                dumps=tuple(dumps),
                native=used_native and bool(dumps),
                errors=tuple(errors),
                python=python,
                sigterm_pending=probe.pending if probe else None,
                sigterm_handler=probe.handler if probe else None,
            )
        )
    runner = (last.get(runner_pid) or first.get(runner_pid)) if runner_pid is not None else None
    return ContainerSample(with_sources(tuple(processes), sources), runner, "script", sources=sources)


def fix_cmdline(relative: str, content: bytes) -> bytes:
    # Without `cat` the shell drops the NULs between arguments: keep what is left as one argument.
    if relative.endswith("/cmdline") and content and b"\0" not in content:
        return content.rstrip(b"\n") + b"\0"
    return content


def _round_dump(
    attempts: list[tuple[str, int, str]],
) -> tuple[tuple[ThreadSample, ...], SamplerError | None, bool]:
    """The threads of one round's dump (full, else plain), or the error py-spy gave."""
    error: SamplerError | None = None
    for mode, code, output in attempts:
        if code == 0:
            try:
                return parse_dump(output), None, mode == "native"
            except (ValueError, KeyError, TypeError) as exc:
                error = SamplerError(f"could not parse py-spy output from the sidecar: {exc}")
                continue
        classified = classify_error(output, native=mode == "native")
        if isinstance(classified, NativeUnavailable) and error is None:
            error = classified
            continue
        error = classified
    return (), error or SamplerError("py-spy did not run in the sidecar"), False


def _engine_by_stack(roles: list[tuple[int, Role]], collected: ScriptOutput) -> list[tuple[int, Role]]:
    """Without readable command lines, tell the engine by its stack: `<module>` of prefect/engine.py."""
    if any(role is Role.ENGINE for _, role in roles):
        return roles
    for index, (pid, _) in enumerate(roles):
        for _, code, output in collected.dumps.get((1, pid), []):
            if code == 0 and "prefect/engine.py" in output and '"<module>"' in output:
                updated = list(roles)
                updated[index] = (pid, Role.ENGINE)
                return updated
    return roles


def _merge(threads: tuple[ThreadSample, ...], snap: ProcSnapshot) -> tuple[ThreadSample, ...]:
    # Inside the namespace py-spy's thread ids and the /proc tids are the same numbers.
    by_tid = {thread.tid: thread for thread in snap.threads}
    return tuple(
        dataclasses.replace(thread, kernel=by_tid.get(thread.native_id) if thread.native_id else None)
        for thread in threads
    )


def with_sources(
    processes: tuple[ProcessSample, ...], sources: Mapping[str, str]
) -> tuple[ProcessSample, ...]:
    """Fill `Frame.code` of frames whose file is in `sources` (and that have none yet), and find
    the `except` clauses that would swallow a termination signal in each engine's main thread."""
    if not sources:
        return processes
    lines = {name: re.split(r"\r\n|\r|\n", text) for name, text in sources.items()}  # as Python numbers lines

    def code(frame: Frame) -> Frame:
        text = lines.get(frame.filename)
        if frame.code is not None or text is None or not 1 <= frame.line <= len(text):
            return frame
        return dataclasses.replace(frame, code=visible(redact_code(text[frame.line - 1].strip())))

    filled = []
    for process in processes:
        process = dataclasses.replace(
            process,
            dumps=tuple(
                tuple(
                    dataclasses.replace(thread, frames=tuple(code(frame) for frame in thread.frames))
                    for thread in dump
                )
                for dump in process.dumps
            ),
        )
        if process.role is Role.ENGINE and process.dumps and not process.swallowing:
            swallowing, cleanup = excepts.find_clauses(process, sources.get)
            process = dataclasses.replace(process, swallowing=swallowing, cleanup=cleanup)
        filled.append(process)
    return tuple(filled)
