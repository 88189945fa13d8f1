"""A Kubernetes API server for tests and the demo, backed by the real Docker engine (see `cluster`)."""

from __future__ import annotations

from prefect_cancel_doctor.demo.kube_apiserver.cluster import (
    BASELINE_CAPABILITIES,
    FIXTURE_LABEL,
    JOB_TRACKING_FINALIZER,
    NODE_NAME,
    PAUSE_SCRIPT,
    ApiStatus,
    FakeApiServer,
    FakeCluster,
    JsonPatchError,
    Policy,
    fake_cluster,
    json_merge_patch,
    json_patch,
    parse_field_selector,
    parse_label_selector,
    parse_quantity,
    strategic_merge_patch,
)

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
