"""The engine's answers as records: containers, their processes and stats, images, its version."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prefect_cancel_doctor.clients._fields import as_labels, as_mapping, as_text, as_texts, as_truncated_int
from prefect_cancel_doctor.clients.docker_api.errors import DockerApiError
from prefect_cancel_doctor.core.inert import visible, visible_or_none
from prefect_cancel_doctor.core.prefect_names import CANCEL_SETTINGS, FLOW_RUN_ENV
from prefect_cancel_doctor.core.prefect_names import DOCKER_FLOW_RUN_LABEL as FLOW_RUN_LABEL
from prefect_cancel_doctor.core.redact import redact_argv
from prefect_cancel_doctor.model import ContainerInfo, ContainerStats

_NEVER = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class TopProcess:
    """One row of `docker top <id> -eo pid,ppid,args` (PIDs in the engine's namespace)."""

    pid: int
    ppid: int
    args: str


@dataclass(frozen=True)
class ContainerSummary:
    """One container of `GET /containers/json` (`docker ps -a`)."""

    id: str
    labels: dict[str, str] = field(default_factory=dict)
    #: When it was created (Unix time, seconds).
    created: int = 0


@dataclass(frozen=True)
class ContainerDetails:
    """One container as `GET /containers/{id}/json` describes it: the facts, and what a sidecar reuses."""

    #: The facts the rules read (processes and stats not filled in).
    info: ContainerInfo
    #: The image it runs, by id (``sha256:...``): a container started from it pulls nothing.
    image_id: str
    #: Its whole environment. It may hold secrets: never put it in a report.
    env: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class ImageSummary:
    """One image of `GET /images/json` (`docker images`)."""

    id: str
    repo_tags: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineVersion:
    """`GET /version`: the engine's version and the newest API version it speaks."""

    version: str
    api_version: str


def container_info(raw: Mapping[str, Any]) -> ContainerInfo:
    """A `GET /containers/{id}/json` document as the facts the rules read.

    Every value a run's configuration can set (names, labels, commands) is made inert
    and its secrets redacted; a value of the wrong type reads as absent.
    """
    state = as_mapping(raw.get("State"))
    config = as_mapping(raw.get("Config"))
    host = as_mapping(raw.get("HostConfig"))
    labels = as_labels(config.get("Labels"))
    env = _env(raw)
    running = bool(state.get("Running"))
    return ContainerInfo(
        id=as_text(raw.get("Id")) or "",
        name=(as_text(raw.get("Name")) or "").lstrip("/") or None,
        status=as_text(state.get("Status")) or ("running" if running else "unknown"),
        running=running,
        exit_code=None if running else as_truncated_int(state.get("ExitCode")),
        oom_killed=bool(state.get("OOMKilled")),
        error=as_text(state.get("Error")),
        image=as_text(config.get("Image")),
        command=redact_argv(_argv(config.get("Cmd"))),
        entrypoint=redact_argv(_argv(config.get("Entrypoint"))),
        stop_signal=as_text(config.get("StopSignal")),
        stop_timeout=as_truncated_int(config.get("StopTimeout")),
        init=bool(host.get("Init")),
        host_pid=as_truncated_int(state.get("Pid")) or None,
        restart_count=as_truncated_int(raw.get("RestartCount")) or 0,
        restart_policy=as_text(as_mapping(host.get("RestartPolicy")).get("Name")),
        started_at=_time(state.get("StartedAt")),
        finished_at=_time(state.get("FinishedAt")),
        labels=labels,
        flow_run_id=visible_or_none(env.get(FLOW_RUN_ENV) or labels.get(FLOW_RUN_LABEL)),
        settings={k: visible(env[k]) for k in CANCEL_SETTINGS if k in env},
    )


def container_details(raw: Mapping[str, Any]) -> ContainerDetails:
    """A `GET /containers/{id}/json` document: its facts, its image id and its environment."""
    return ContainerDetails(container_info(raw), str(raw.get("Image") or ""), _env(raw))


def container_summary(raw: Mapping[str, Any]) -> ContainerSummary:
    """One entry of a `GET /containers/json` answer."""
    return ContainerSummary(
        str(raw["Id"]), as_labels(raw.get("Labels")), as_truncated_int(raw.get("Created")) or 0
    )


def image_summary(raw: Mapping[str, Any]) -> ImageSummary:
    """One entry of a `GET /images/json` answer."""
    tags = tuple(str(tag) for tag in raw.get("RepoTags") or ())
    return ImageSummary(str(raw["Id"]), tags, as_labels(raw.get("Labels")))


def parse_top(document: Mapping[str, Any]) -> list[TopProcess]:
    """Rows of a `/top` answer; needs the pid, ppid and args (or cmd/command) columns."""
    titles = [str(t).upper() for t in document.get("Titles") or ()]
    try:
        pid_col = titles.index("PID")
        ppid_col = titles.index("PPID")
    except ValueError as exc:
        raise DockerApiError(f"docker top returned no PID/PPID columns: {titles}", 500) from exc
    args_col = next((i for i, t in enumerate(titles) if t in ("COMMAND", "CMD", "ARGS")), len(titles) - 1)
    rows = []
    for row in document.get("Processes") or ():
        try:
            pid, ppid = int(row[pid_col]), int(row[ppid_col])
            args = " ".join(redact_argv(tuple(visible(str(row[args_col])).split(" "))))
        except (ValueError, TypeError, IndexError, KeyError):
            continue
        rows.append(TopProcess(pid=pid, ppid=ppid, args=args))
    return rows


def parse_stats(document: Mapping[str, Any]) -> ContainerStats:
    """CPU % and memory from a `stats?stream=false` answer, computed as `docker stats` does."""
    cpu = document.get("cpu_stats") or {}
    pre = document.get("precpu_stats") or {}
    cpu_percent = None
    try:
        cpu_delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        system_delta = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
        online = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or ()) or 1
        if system_delta > 0 and cpu_delta >= 0:
            cpu_percent = round(cpu_delta / system_delta * online * 100.0, 2)
    except (KeyError, TypeError):
        pass
    memory = document.get("memory_stats") or {}
    usage = memory.get("usage")
    detail = memory.get("stats") or {}
    cache = detail.get("total_inactive_file", detail.get("inactive_file", 0)) or 0
    return ContainerStats(
        cpu_percent=cpu_percent,
        memory_bytes=int(usage - cache) if isinstance(usage, int) and usage >= cache else usage,
        memory_limit_bytes=memory.get("limit"),
        pids=(document.get("pids_stats") or {}).get("current"),
    )


def _env(raw: Mapping[str, Any]) -> dict[str, str]:
    """Config.Env ("KEY=value" entries) as a dict."""
    entries = as_mapping(raw.get("Config")).get("Env")
    if not isinstance(entries, list):
        return {}
    pairs = (str(entry).partition("=") for entry in entries)
    return {key: value for key, _, value in pairs}


def _argv(value: Any) -> tuple[str, ...]:
    """Cmd and Entrypoint: a list, or one string (the shell form)."""
    return (visible(value),) if isinstance(value, str) else as_texts(value)


def _time(value: Any) -> str | None:
    return None if not isinstance(value, str) or not value or value == _NEVER else visible(value)
