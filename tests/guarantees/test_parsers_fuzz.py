"""No traceback from any input: every parser of outside data, fuzzed with hypothesis.

Each parser either returns its record or raises the one error its caller turns
into a clear message (an exit code, a sampling error); nothing else escapes.
Whatever text it keeps carries no control character.
"""

from __future__ import annotations

import contextlib
import json
import string
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefect_cancel_doctor.clients.docker_api import DockerError
from prefect_cancel_doctor.clients.prefect_records import (
    UnexpectedShape,
    parse_deployment,
    parse_event_page,
    parse_flow_runs,
    parse_pool_concurrency,
    parse_server_settings,
    parse_states,
    parse_time,
    parse_workers,
)
from prefect_cancel_doctor.clients.settings import read_profile
from prefect_cancel_doctor.core.durations import parse_duration
from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.errors import ConfigurationError
from prefect_cancel_doctor.kinds import InfraRef, parse_infrastructure_pid
from prefect_cancel_doctor.model import InfraKind
from prefect_cancel_doctor.proc import procfs
from prefect_cancel_doctor.sample.pyspy import parse_dump

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text as hostile as a server or a process can send: controls, escapes, surrogates, digits of
# other scripts (which pass str.isdigit()), very long runs.
hostile_text = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec=None, categories=None)),
    st.sampled_from(
        ["²", "٣", "\x1b[2J", "\x1b]0;pwned\x07", "\ud800", "9" * 10_000, "http://10.0.0.5:8080:ab"]
    ),
    st.text(alphabet=string.digits + ":/.abcdef", max_size=80),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | hostile_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(hostile_text, children, max_size=4),
    max_leaves=20,
)


def _no_controls(value: Any) -> None:
    """Every string held by a record is already inert."""
    if isinstance(value, str):
        assert visible(value, len(value) + 1) == value, value
    elif isinstance(value, (list, tuple)):
        for item in value:
            _no_controls(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_controls(key)
            _no_controls(item)
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            _no_controls(getattr(value, name))


@FUZZ
@given(hostile_text)
def test_any_infrastructure_pid_parses_to_a_kind(raw: str) -> None:
    ref = parse_infrastructure_pid(raw)
    assert isinstance(ref, InfraRef) and ref.kind in InfraKind
    assert isinstance(ref.describe(), str)
    if ref.pid is not None:
        assert 0 <= ref.pid < 10_000_000


@pytest.mark.parametrize("raw", ["²", "٣٣", "9" * 10_000, "host:²", "x:" + "9" * 5000])
def test_malformed_pids_are_not_processes(raw: str) -> None:
    assert parse_infrastructure_pid(raw).kind != InfraKind.PROCESS


def test_a_run_cannot_name_a_network_destination_as_a_process() -> None:
    # The Docker form is parsed, but only the operator's configuration picks the engine
    # (tests/guarantees/test_network_destinations.py proves no connection goes there).
    ref = parse_infrastructure_pid("http://10.0.0.5:8080:" + "ab" * 32)
    assert ref.kind == InfraKind.DOCKER


flow_run_like = st.fixed_dictionaries(
    {"id": hostile_text},
    optional={
        "name": json_values,
        "state": st.one_of(json_values, st.fixed_dictionaries({}, optional={"type": json_values})),
        "labels": json_values,
        "infrastructure_pid": json_values,
        "start_time": json_values,
        "work_pool_name": json_values,
    },
)


@FUZZ
@given(st.one_of(json_values, st.lists(st.one_of(flow_run_like, json_values), max_size=5)))
def test_any_api_answer_is_records_or_unexpected_shape(raw: Any) -> None:
    for parse in (parse_flow_runs, parse_states, parse_workers):
        try:
            parsed = parse(raw)
        except UnexpectedShape as exc:
            assert exc.exit_code == 3
            continue
        _no_controls(parsed)
    for parse_one in (parse_pool_concurrency, parse_server_settings):
        _no_controls(parse_one(raw))
    try:
        _no_controls(parse_deployment(raw))
        _no_controls(parse_event_page(raw))
    except UnexpectedShape:
        pass


@FUZZ
@given(hostile_text)
def test_any_timestamp_is_a_time_or_none(raw: str) -> None:
    moment = parse_time(raw)
    assert moment is None or moment.tzinfo is not None


frame_like = st.fixed_dictionaries(
    {},
    optional={
        "name": json_values,
        "filename": json_values,
        "line": json_values,
        "module": json_values,
        "locals": json_values,
    },
)
thread_like = st.fixed_dictionaries(
    {},
    optional={
        "thread_id": json_values,
        "os_thread_id": json_values,
        "thread_name": json_values,
        "frames": st.lists(st.one_of(frame_like, json_values), max_size=4),
    },
)


@FUZZ
@given(
    st.one_of(hostile_text, json_values.map(json.dumps), st.lists(thread_like, max_size=3).map(json.dumps))
)
def test_any_py_spy_output_is_threads_or_value_error(text: str) -> None:
    try:
        threads = parse_dump(text)
    except (ValueError, RecursionError):
        return
    _no_controls(threads)


@FUZZ
@given(hostile_text)
def test_any_duration_text_is_a_duration_or_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        assert parse_duration(text) >= timedelta(0)


proc_file = st.one_of(hostile_text, st.binary(max_size=300).map(lambda b: b.decode("latin-1")))


@FUZZ
@given(
    stat=proc_file,
    status=proc_file,
    cmdline=st.binary(max_size=200),
    environ=st.binary(max_size=200),
    syscall=proc_file,
    tcp=proc_file,
)
def test_any_proc_tree_reads_as_a_process_or_none(
    tmp_path_factory: pytest.TempPathFactory,
    stat: str,
    status: str,
    cmdline: bytes,
    environ: bytes,
    syscall: str,
    tcp: str,
) -> None:
    root = tmp_path_factory.mktemp("proc")
    base = root / "4242"
    task = base / "task" / "4242"
    task.mkdir(parents=True)
    (base / "net").mkdir()
    (base / "fd").mkdir()
    for directory in (base, task):
        _write(directory / "stat", stat)
        _write(directory / "status", status)
        _write(directory / "comm", stat[:16])
    (base / "cmdline").write_bytes(cmdline)
    (base / "environ").write_bytes(environ)
    _write(task / "syscall", syscall)
    _write(base / "net" / "tcp", tcp)
    snapshot = procfs.read_process(4242, root)
    if snapshot is not None:
        _no_controls(snapshot)
    assert isinstance(procfs.flow_run_processes(root), dict)


def _write(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))


@FUZZ
@given(proc_file)
def test_any_profiles_file_is_settings_or_a_configuration_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    home = tmp_path_factory.mktemp("prefect_home")
    _write(home / "profiles.toml", text)
    try:
        _, values = read_profile({"PREFECT_HOME": str(home)}, None)
    except ConfigurationError:
        return
    assert isinstance(values, dict)


container_like = st.fixed_dictionaries(
    {},
    optional={
        "Id": json_values,
        "Name": json_values,
        "State": st.one_of(
            json_values, st.dictionaries(st.sampled_from(["Pid", "Running", "ExitCode"]), json_values)
        ),
        "Config": st.one_of(
            json_values,
            st.dictionaries(st.sampled_from(["Cmd", "Env", "Labels", "StopTimeout", "Image"]), json_values),
        ),
        "HostConfig": json_values,
        "RestartCount": json_values,
    },
)


@FUZZ
@given(container_like)
def test_any_docker_inspect_document_is_a_container_record(raw: dict[str, Any]) -> None:
    from prefect_cancel_doctor.clients.docker_api import container_info, parse_top

    _no_controls(container_info(raw))
    with contextlib.suppress(DockerError):
        _no_controls(parse_top(raw))
