"""What every benchmark shares: the machine, timing, result tables, local servers, stuck targets."""

from __future__ import annotations

import compileall
import contextlib
import importlib.metadata
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prefect_cancel_doctor.demo.harness import LocalPrefect

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOCTOR = str(BIN / "prefect-cancel-doctor")
PREFECT = str(BIN / "prefect")
STUCK_FLOW = Path(__file__).resolve().parent / "targets" / "stuck_flow.py"

#: A quiet server: no loop services, so nothing changes the seeded runs (the
#: cancellation cleanup would end runs in Cancelling) and the two cores are
#: left to the requests being measured. The API answers exactly as usual.
QUIET_SERVER = {
    f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false"
    for name in (
        "CANCELLATION_CLEANUP",
        "EVENT_PERSISTER",
        "EVENT_LOGGER",
        "FOREMAN",
        "LATE_RUNS",
        "SCHEDULER",
        "PAUSE_EXPIRATIONS",
        "REPOSSESSOR",
        "TASK_RUN_RECORDER",
        "TRIGGERS",
    )
} | {"PREFECT_SERVER_LOGGING_LEVEL": "WARNING"}


def compile_bytecode() -> None:
    """Compile the package's bytecode, as `pip install` does, before timing it.

    An editable install under PYTHONDONTWRITEBYTECODE (set on some machines,
    this one included) would otherwise compile the doctor's ~40 modules from
    source on every start: ~30 ms that an installed doctor never pays, while
    the baselines' packages have theirs.
    """
    compileall.compile_dir(str(REPO / "prefect_cancel_doctor"), quiet=1)


compile_bytecode()


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the results."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the machine ---------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def machine() -> str:
    """One line: CPU, cores, memory, kernel, Python, Prefect and py-spy versions."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / 1024 / 1024:.0f} GiB"
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory}, Linux {platform.release()}, "
        f"Python {platform.python_version()}, prefect {_version('prefect')}, py-spy {_version('py-spy')}"
    )


def load() -> str:
    """The load averages (1, 5, 15 min)."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


# -- results -------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One measured figure next to its baseline and target."""

    what: str
    ours: float
    baseline: float | None
    unit: str
    #: "≤ 0.2×" (a ratio) or "≤ 3 s" (an absolute figure); empty when informative only.
    target: str = ""
    met: bool | None = None
    baseline_name: str = ""


def ratio_row(
    what: str, ours: float, baseline: float, unit: str, max_ratio: float | None, baseline_name: str
) -> Row:
    """A row whose target is a maximum ratio ours / baseline."""
    met = None if max_ratio is None else ours <= max_ratio * baseline
    target = "" if max_ratio is None else f"≤ {max_ratio:g}×"
    return Row(what, ours, baseline, unit, target, met, baseline_name)


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "MB":
        return f"{value:.1f} MB"
    return f"{value:g} {unit}"


def print_table(title: str, rows: Sequence[Row], notes: Sequence[str] = ()) -> None:
    """A Markdown table: ours, the baseline (named), the ratio, the target, met or not."""
    print(f"\n### {title}\n")
    print(f"Machine: {machine()}  ")
    print(f"Load average (1/5/15 min) at the end: {load()}\n")
    print("| measure | ours | baseline | ratio | target | met? |")
    print("|---|---:|---:|---:|---|---|")
    for row in rows:
        ratio = f"{row.ours / row.baseline:.3f}×" if row.baseline else "–"
        baseline = _figure(row.baseline, row.unit)
        if row.baseline_name:
            baseline += f" ({row.baseline_name})"
        met = {None: "", True: "yes", False: "**no**"}[row.met]
        print(f"| {row.what} | {_figure(row.ours, row.unit)} | {baseline} | {ratio} | {row.target} | {met} |")
    for note in notes:
        print(f"\n{note}")
    sys.stdout.flush()


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# -- timing ----------------------------------------------------------------------


def alternate(runs: Mapping[str, Callable[[], None]], repeat: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall time of each callable, `repeat` times, taking turns (a b a b ...) so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for index in range(warmup + repeat):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            elapsed = time.perf_counter() - started
            if index >= warmup:
                times[name].append(elapsed)
    return times


def command(argv: Sequence[str], env: Mapping[str, str], ok: Sequence[int] = (0,)) -> Callable[[], None]:
    """A callable that runs `argv` to completion, output discarded, failing on an unexpected status."""

    def run() -> None:
        result = subprocess.run(
            list(argv), env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
        )
        if result.returncode not in ok:
            raise RuntimeError(
                f"{' '.join(argv)} exited {result.returncode}: {result.stderr.decode()[-2000:]}"
            )

    return run


@dataclass(frozen=True)
class Peak:
    """A process run to completion: its wall time and peak memory."""

    seconds: float
    #: The peak RSS of the process itself (VmHWM, read until it exits).
    own_mb: float
    #: The largest sum of RSS over the process and its descendants, polled every 5 ms.
    tree_mb: float


def peak_memory(argv: Sequence[str], env: Mapping[str, str], ok: Sequence[int] = (0, 1)) -> Peak:
    """Run `argv`, polling /proc for its peak RSS (and its process tree's) until it exits."""
    started = time.perf_counter()
    process = subprocess.Popen(
        list(argv), env=dict(env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    own_kb = tree_kb = 0
    while process.poll() is None:
        own_kb = max(own_kb, _status_kb(process.pid, "VmHWM"))
        tree_kb = max(tree_kb, sum(_status_kb(pid, "VmRSS") for pid in _tree(process.pid)))
        time.sleep(0.005)
    seconds = time.perf_counter() - started
    _, stderr = process.communicate()
    if process.returncode not in ok:
        raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}: {stderr.decode()[-2000:]}")
    return Peak(seconds, own_kb / 1024, tree_kb / 1024)


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (from /proc/*/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                with contextlib.suppress(OSError, ValueError):
                    todo.extend(
                        int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()
                    )
    return found


# -- servers ---------------------------------------------------------------------


@contextlib.contextmanager
def local_server(
    database: Path | None = None,
    *,
    prepare: Callable[[Path], None] | None = None,
    persist_events: bool = False,
) -> Iterator[LocalPrefect]:
    """A quiet local Prefect server on a copy of `database` (a fresh one if None); all removed after.

    `prepare` is given the copy before the server opens it; `persist_events`
    keeps the event persister on (off otherwise, like every loop service).
    """
    server_env = dict(QUIET_SERVER)
    if persist_events:
        del server_env["PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED"]
    with tempfile.TemporaryDirectory(prefix="pcd-bench-") as tmp:
        workdir = Path(tmp)
        if database is not None:
            home = workdir / "prefect-home"
            home.mkdir()
            shutil.copyfile(database, home / "prefect.db")
            if prepare is not None:
                prepare(home / "prefect.db")
        with LocalPrefect(workdir=workdir, server_env=server_env, log=log) as prefect:
            yield prefect


def client_env(prefect: LocalPrefect) -> dict[str, str]:
    """The environment of a CLI run against `prefect` (its URL and its own PREFECT_HOME)."""
    env = prefect.child_env()
    for key in [k for k in env if k.startswith("PCD_")]:
        del env[key]
    env["NO_COLOR"] = "1"
    return env


@contextlib.contextmanager
def autopilot_home(
    prefix: str, api_url: str, host: str, policy: str
) -> Iterator[tuple[Path, dict[str, str]]]:
    """A temporary home for an `agent --autopilot` of a benchmark: the policy file, written in it, and
    the agent's environment (`api_url`, its own PREFECT_HOME and state, `host`), without this shell's
    PREFECT_ and PCD_ settings. Removed after."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        home = Path(tmp)
        path = home / "policy.toml"
        path.write_text(policy)
        yield (
            path,
            {
                **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PCD_"))},
                "PREFECT_API_URL": api_url,
                "PREFECT_HOME": str(home / "prefect"),
                "XDG_STATE_HOME": str(home / "state"),
                "PCD_HOST": host,
            },
        )


# -- stuck targets -------------------------------------------------------------


@contextlib.contextmanager
def stuck_processes(
    count: int,
    *,
    envs: Sequence[Mapping[str, str]] | None = None,
    args: Sequence[str] = (),
) -> Iterator[list[subprocess.Popen[str]]]:
    """`count` stand-in flow processes (bench/targets/stuck_flow.py), each ready; all killed after."""
    children: list[subprocess.Popen[str]] = []
    try:
        for index in range(count):
            env = {**os.environ, **(envs[index] if envs else {})}
            child = subprocess.Popen(
                [sys.executable, str(STUCK_FLOW), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                start_new_session=True,
            )
            children.append(child)
        for child in children:
            assert child.stdout is not None
            readable, _, _ = select.select([child.stdout], [], [], 60)
            if not readable or child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"stuck target {child.pid} never said ready")
        yield children
    finally:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
        for child in children:
            child.wait()
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()


def read_json_line(child: subprocess.Popen[str], request: str, timeout: float = 30) -> object:
    """Write `request` to the child's stdin and parse the JSON line it answers."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(request + "\n")
    child.stdin.flush()
    readable, _, _ = select.select([child.stdout], [], [], timeout)
    if not readable:
        raise RuntimeError(f"process {child.pid} did not answer {request!r}")
    return json.loads(child.stdout.readline())
