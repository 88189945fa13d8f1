"""The Docker Engine API over httpx: where the engine is, a small client, and its answers as records.

Only the Engine API is used (no Docker SDK, no CLI): ``DOCKER_HOST`` is honoured
(``unix://`` and ``tcp://``, TLS through ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``);
``ssh://`` is refused with a way around it. prefect-docker records the engine's
base URL in `infrastructure_pid`; with the Docker SDK's default socket it reads
``http+docker://localhost`` (the socket path is not in it).

Nothing outside this package reads the engine's JSON: `DockerClient` returns the
model's records (`ContainerInfo`, `ContainerStats`, `ContainerEvent`) or the small frozen records
defined here (`TopProcess`, `ContainerSummary`, `ContainerDetails`,
`ImageSummary`, `EngineVersion`), and the parsers that build them
(`container_info`, `parse_top`, `parse_stats`, `parse_event`, `demux_logs`, ...) live here too
(`records`, `streams`); where the engine is, `endpoint`; the errors, `errors`.
Locating a run's container is `prefect_cancel_doctor.kinds.docker.locate`; sampling it
from a sidecar is `prefect_cancel_doctor.kinds.docker.sidecar`.
"""

from __future__ import annotations

from prefect_cancel_doctor.clients.docker_api.client import DockerClient
from prefect_cancel_doctor.clients.docker_api.endpoint import (
    DEFAULT_SOCKET,
    DockerEndpoint,
    recorded_remote_engine,
    resolve_endpoint,
)
from prefect_cancel_doctor.clients.docker_api.errors import (
    ContainerNotFound,
    DockerApiError,
    DockerConfigError,
    DockerError,
    DockerPermissionDenied,
    DockerUnreachable,
)
from prefect_cancel_doctor.clients.docker_api.records import (
    ContainerDetails,
    ContainerSummary,
    EngineVersion,
    ImageSummary,
    TopProcess,
    container_details,
    container_info,
    container_summary,
    image_summary,
    parse_stats,
    parse_top,
)
from prefect_cancel_doctor.clients.docker_api.streams import EVENT_ACTIONS, demux_logs, parse_event
from prefect_cancel_doctor.core.prefect_names import DOCKER_FLOW_RUN_LABEL as FLOW_RUN_LABEL
from prefect_cancel_doctor.core.prefect_names import FLOW_RUN_ENV

__all__ = [
    "DEFAULT_SOCKET",
    "EVENT_ACTIONS",
    "FLOW_RUN_ENV",
    "FLOW_RUN_LABEL",
    "ContainerDetails",
    "ContainerNotFound",
    "ContainerSummary",
    "DockerApiError",
    "DockerClient",
    "DockerConfigError",
    "DockerEndpoint",
    "DockerError",
    "DockerPermissionDenied",
    "DockerUnreachable",
    "EngineVersion",
    "ImageSummary",
    "TopProcess",
    "container_details",
    "container_info",
    "container_summary",
    "demux_logs",
    "image_summary",
    "parse_event",
    "parse_stats",
    "parse_top",
    "recorded_remote_engine",
    "resolve_endpoint",
]
