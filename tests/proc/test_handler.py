"""The interpreter's SIGTERM handler, read from real processes' memory (proc/interpreter.py)."""

from __future__ import annotations

import glob
import os
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from prefect_cancel_doctor.model import HandlerKind, SigtermHandler
from prefect_cancel_doctor.proc import interpreter
from prefect_cancel_doctor.sample.handler import sigterm_handler

pytestmark = pytest.mark.real

# Each program installs a handler, says "ready", and waits to be killed.
PROGRAM = """\
import functools, signal, sys, time


def on_term(signum, frame):
    sys.exit(3)


class Cls:
    def method(self, signum, frame):
        sys.exit(3)


class function:  # a user class named like CPython's function type
    def __call__(self, signum, frame):
        sys.exit(3)


HANDLERS = {{
    "default": signal.SIG_DFL,
    "ignore": signal.SIG_IGN,
    "function": on_term,
    "lambda": lambda signum, frame: sys.exit(3),
    "method": Cls().method,
    "partial": functools.partial(functools.partial(on_term)),
    "instance": function(),
    "builtin": signal.default_int_handler,
}}
signal.signal(signal.SIGTERM, HANDLERS[{mode!r}])
print("ready", flush=True)
time.sleep(120)
"""
ON_TERM_LINE, LAMBDA_LINE, METHOD_LINE = 4, 22, 9

Start = Callable[..., int]


def _has_symtab(path: str) -> bool:
    """Whether an ELF64 file keeps its symbol table (a SHT_SYMTAB section)."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF":
        return False
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    return any(struct.unpack_from("<I", data, shoff + i * shentsize + 4)[0] == 2 for i in range(shnum))


def _interpreter_files(python: str) -> list[str]:
    """The executable and the libpython it loads (a shared build keeps the symbols there)."""
    real = os.path.realpath(python)
    return [real, *glob.glob(os.path.join(os.path.dirname(os.path.dirname(real)), "lib", "libpython3*.so*"))]


def _pyenv(minor: int) -> list[str]:
    return sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python3.{minor}")))


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Starts a program (PROGRAM's `mode`, or a given text) from a file; kills it afterwards."""
    processes: list[subprocess.Popen[str]] = []

    def run(mode: str | None = None, *, text: str | None = None, python: str = sys.executable) -> int:
        program = tmp_path / f"program_{len(processes)}.py"
        program.write_text(PROGRAM.format(mode=mode) if text is None else text)
        process = subprocess.Popen([python, str(program)], stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        return process.pid

    yield run
    for process in processes:
        process.kill()
        process.wait()


def test_the_suite_runs_a_python_whose_layout_is_known() -> None:
    assert sys.version_info[:2] in ((3, 10), (3, 11))


def test_sig_dfl_reads_default(start: Start) -> None:
    assert sigterm_handler(start("default")) == SigtermHandler(HandlerKind.DEFAULT)


def test_sig_ign_reads_ignore(start: Start) -> None:
    assert sigterm_handler(start("ignore")) == SigtermHandler(HandlerKind.IGNORE)


def test_a_function_reads_its_name_file_and_line(start: Start, tmp_path: Path) -> None:
    pid = start("function")
    assert sigterm_handler(pid) == SigtermHandler(
        HandlerKind.OTHER, "on_term", str(tmp_path / "program_0.py"), ON_TERM_LINE
    )
    assert (tmp_path / "program_0.py").read_text().splitlines()[ON_TERM_LINE - 1].startswith("def on_term(")


def test_a_lambda(start: Start, tmp_path: Path) -> None:
    assert sigterm_handler(start("lambda")) == SigtermHandler(
        HandlerKind.OTHER, "<lambda>", str(tmp_path / "program_0.py"), LAMBDA_LINE
    )


def test_a_bound_method_reads_its_function(start: Start, tmp_path: Path) -> None:
    assert sigterm_handler(start("method")) == SigtermHandler(
        HandlerKind.OTHER, "Cls.method", str(tmp_path / "program_0.py"), METHOD_LINE
    )


def test_a_partial_reads_the_function_it_wraps(start: Start, tmp_path: Path) -> None:
    assert sigterm_handler(start("partial")) == SigtermHandler(
        HandlerKind.OTHER, "on_term", str(tmp_path / "program_0.py"), ON_TERM_LINE
    )


def test_a_callable_instance_reads_its_type_even_one_named_function(start: Start) -> None:
    # A heap type named `function` is not read as a PyFunctionObject.
    assert sigterm_handler(start("instance")) == SigtermHandler(HandlerKind.OTHER, "function")


def test_a_builtin_reads_its_c_name(start: Start) -> None:
    assert sigterm_handler(start("builtin")) == SigtermHandler(HandlerKind.OTHER, "default_int_handler")


def test_prefects_bridge_reads_prefect(start: Start) -> None:
    pid = start(
        text=textwrap.dedent(
            """\
            import time
            from prefect.utilities.engine import capture_sigterm

            with capture_sigterm():
                print("ready", flush=True)
                time.sleep(120)
            """
        )
    )
    handler = sigterm_handler(pid)
    assert handler is not None and handler.kind == HandlerKind.PREFECT
    assert handler.qualname == "_prefect_sigterm_handler"
    assert handler.filename is not None
    assert handler.filename.endswith("/site-packages/prefect/utilities/engine/__init__.py")
    source = Path(handler.filename).read_text().splitlines()
    assert handler.line is not None and source[handler.line - 1].startswith("def _prefect_sigterm_handler(")


# The NULL and None cases, which `signal.signal` cannot install: the child writes them into its own
# `Handlers[SIGTERM].func` (found by the doctor's lookup) with ctypes.
FORGED = """\
import ctypes, os, signal, time
from prefect_cancel_doctor.proc.interpreter import mappings, sigterm_entry

signal.signal(signal.SIGTERM, {installed})
entry = sigterm_entry(os.getpid(), "/proc", mappings(os.getpid()))
ctypes.c_void_p.from_address(entry.address + 8).value = {func}
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize(
    ("installed", "func", "expected"),
    [
        # NULL: no record in Python, the kernel's disposition answers.
        ("signal.SIG_IGN", "None", SigtermHandler(HandlerKind.IGNORE)),
        ("signal.SIG_DFL", "None", SigtermHandler(HandlerKind.DEFAULT)),
        ("lambda *args: None", "None", None),  # caught, by C as far as Python knows
        # Py_None: a handler installed outside Python.
        ("lambda *args: None", "id(None)", SigtermHandler(HandlerKind.OTHER)),
    ],
)
def test_no_python_record(start: Start, installed: str, func: str, expected: SigtermHandler | None) -> None:
    pid = start(text=FORGED.format(installed=installed, func=func))
    assert sigterm_handler(pid) == expected


@pytest.mark.parametrize("minor", [10, 11])
def test_other_builds_of_the_known_versions(start: Start, tmp_path: Path, minor: int) -> None:
    pythons = [p for p in _pyenv(minor) if any(_has_symtab(f) for f in _interpreter_files(p))]
    if not pythons:
        pytest.skip(f"no 3.{minor} interpreter with a symbol table besides the suite's")
    for index, python in enumerate(pythons):
        pid = start("method", python=python)
        program = tmp_path / f"program_{2 * index}.py"
        expected = SigtermHandler(HandlerKind.OTHER, "Cls.method", str(program), METHOD_LINE)
        assert sigterm_handler(pid) == expected, python
        assert sigterm_handler(start("ignore", python=python)) == SigtermHandler(HandlerKind.IGNORE), python


def test_a_newer_python_reads_none(start: Start) -> None:
    pythons = _pyenv(12) + _pyenv(13)
    if not pythons:
        pytest.skip("no Python 3.12+ on this machine")
    for python in pythons:
        assert sigterm_handler(start("function", python=python)) is None, python


def test_a_stripped_interpreter_reads_none(start: Start) -> None:
    stripped = "/usr/bin/python3"
    if not Path(stripped).exists() or any(_has_symtab(f) for f in _interpreter_files(stripped)):
        message = f"no stripped distribution Python at {stripped}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert sigterm_handler(start("function", python=stripped)) is None


def test_a_gone_process_reads_none() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert sigterm_handler(process.pid) is None
    assert sigterm_handler(2**22 + 1) is None


def test_a_hostile_handler_name_is_made_inert(tmp_path: Path) -> None:
    # GIVEN a flow that names its handler with an OSC 52 clipboard write and a bidi override
    program = tmp_path / "hostile.py"
    program.write_text(
        "import signal, time\n"
        "def on_term(s, f): pass\n"
        "on_term.__qualname__ = 'evil\\x1b]52;c;aGk=\\x07\\u202e'\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    process = subprocess.Popen([sys.executable, str(program)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        handler = sigterm_handler(process.pid)
        # THEN the name is read, and no control character survives
        assert handler is not None and handler.qualname == "evil\\x1b]52;c;aGk=\\x07\\u202e"
        assert handler.qualname.isprintable()
    finally:
        process.kill()
        process.wait()


def test_processes_of_one_interpreter_have_its_symbols_read_once(
    start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each target names the interpreter by its own /proc/PID/root/...: the file is read once all the same.
    reads: list[str] = []
    read_symbol = interpreter._read_symbol
    monkeypatch.setattr(interpreter, "_symbols", {})
    monkeypatch.setattr(interpreter, "_read_symbol", lambda path: reads.append(path) or read_symbol(path))
    pids = [start("function"), start("method")]
    handlers = [sigterm_handler(pid) for pid in pids]
    assert [h.qualname if h else None for h in handlers] == ["on_term", "Cls.method"]
    files = {os.path.realpath(p.split("/root", 1)[1]) for p in reads}
    assert len(reads) == len(files), reads  # each interpreter file read once for both processes
    assert all(str(pids[0]) in p for p in reads)
