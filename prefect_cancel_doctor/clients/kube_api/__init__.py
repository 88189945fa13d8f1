"""The Kubernetes API over httpx: a small client answering frozen records.

Why not a library: the official client costs seconds to import; lightkube 1.0
(the light one) now requires ``httpx2`` and ``msgspec`` beside our httpx. The
doctor needs ten calls, so they are here, and nothing outside this package reads
the API's JSON: `KubeClient` returns `Job`, `Pod`, `PodEvent`, `NodeInfo`,
`AccessReview` (`records`, built by `parse`), or raises `KubeApiError` carrying the API's
`Status` (code, reason, message) word for word.

The connection is resolved like kubectl's (`prefect_cancel_doctor.clients.kube_config`); TLS and the
credentials a request carries are `transport`.
This package is imported only for runs whose `infrastructure_pid` names a
Kubernetes Job, or by ``inspect --pod``.
"""

from __future__ import annotations

from prefect_cancel_doctor.clients.kube_api.client import KubeClient
from prefect_cancel_doctor.clients.kube_api.errors import (
    KubeApiError,
    KubeError,
    KubeNotFound,
    KubeUnreachable,
)
from prefect_cancel_doctor.clients.kube_api.parse import (
    event_info,
    job_info,
    node_info,
    ordered_pods,
    pod_info,
    selector,
)
from prefect_cancel_doctor.clients.kube_api.records import (
    JOB_NAME_LABEL,
    POD_SECURITY_ENFORCE,
    AccessReview,
    ContainerSpec,
    ContainerState,
    JobInfo,
    NamespaceInfo,
    NodeInfo,
    OwnerRef,
    PodEvent,
    PodInfo,
)
from prefect_cancel_doctor.clients.kube_api.transport import ssl_context
from prefect_cancel_doctor.core.prefect_names import FLOW_RUN_ENV
from prefect_cancel_doctor.core.prefect_names import KUBE_FLOW_RUN_LABEL as FLOW_RUN_LABEL

__all__ = [
    "FLOW_RUN_ENV",
    "FLOW_RUN_LABEL",
    "JOB_NAME_LABEL",
    "POD_SECURITY_ENFORCE",
    "AccessReview",
    "ContainerSpec",
    "ContainerState",
    "JobInfo",
    "KubeApiError",
    "KubeClient",
    "KubeError",
    "KubeNotFound",
    "KubeUnreachable",
    "NamespaceInfo",
    "NodeInfo",
    "OwnerRef",
    "PodEvent",
    "PodInfo",
    "event_info",
    "job_info",
    "node_info",
    "ordered_pods",
    "pod_info",
    "selector",
    "ssl_context",
]
