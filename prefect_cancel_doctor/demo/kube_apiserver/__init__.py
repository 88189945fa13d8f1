"""A Kubernetes API server for tests and the demo, backed by the real Docker engine: every pod is a
Docker container. What it serves, how it behaves and where it differs from a real cluster:
docs/kubernetes-fixture.md (and docs/kubernetes-fidelity.md, point by point against a real cluster).

Modules, each importing only those listed before it:

- `status`: `ApiStatus`, the API server's error answers (``Status`` bodies).
- `patches`: label and field selectors; JSON merge, strategic merge and JSON patches.
- `admission`: defaulting, validation and Pod Security admission of a pod's changes.
- `containers`: the `Kubelet`: each container of a pod as a Docker container, its state and logs.
- `certificates`: TLS material (a CA, server and client certificates).
- `cluster`: `FakeCluster`, the objects (namespaces, Jobs, pods, the node, events) and the
  controllers' part: Jobs' pods, deletion with grace periods and finalizers, eviction.
- `server`: `FakeApiServer`, the HTTP(S) front (discovery, authorization, routing), and `fake_cluster`.
"""

from __future__ import annotations

from prefect_cancel_doctor.demo.kube_apiserver.admission import BASELINE_CAPABILITIES
from prefect_cancel_doctor.demo.kube_apiserver.cluster import (
    JOB_TRACKING_FINALIZER,
    NODE_NAME,
    FakeCluster,
)
from prefect_cancel_doctor.demo.kube_apiserver.containers import (
    FIXTURE_LABEL,
    PAUSE_SCRIPT,
    parse_quantity,
)
from prefect_cancel_doctor.demo.kube_apiserver.patches import (
    JsonPatchError,
    json_merge_patch,
    json_patch,
    parse_field_selector,
    parse_label_selector,
    strategic_merge_patch,
)
from prefect_cancel_doctor.demo.kube_apiserver.server import FakeApiServer, Policy, fake_cluster
from prefect_cancel_doctor.demo.kube_apiserver.status import ApiStatus

__all__ = [
    "BASELINE_CAPABILITIES",
    "FIXTURE_LABEL",
    "JOB_TRACKING_FINALIZER",
    "NODE_NAME",
    "PAUSE_SCRIPT",
    "ApiStatus",
    "FakeApiServer",
    "FakeCluster",
    "JsonPatchError",
    "Policy",
    "fake_cluster",
    "json_merge_patch",
    "json_patch",
    "parse_field_selector",
    "parse_label_selector",
    "parse_quantity",
    "strategic_merge_patch",
]
