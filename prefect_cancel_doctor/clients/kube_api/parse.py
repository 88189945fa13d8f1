"""The API's JSON as records: every value a run's configuration sets is made inert."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect_cancel_doctor.clients._fields import as_int, as_labels, as_mapping, as_str, as_text, as_texts
from prefect_cancel_doctor.clients.kube_api.records import (
    ContainerSpec,
    ContainerState,
    JobInfo,
    NodeInfo,
    OwnerRef,
    PodEvent,
    PodInfo,
)
from prefect_cancel_doctor.core.inert import visible, visible_or_none
from prefect_cancel_doctor.core.prefect_names import CANCEL_SETTINGS, FLOW_RUN_ENV
from prefect_cancel_doctor.core.prefect_names import KUBE_FLOW_RUN_LABEL as FLOW_RUN_LABEL
from prefect_cancel_doctor.core.redact import redact_argv


def job_info(raw: Mapping[str, Any]) -> JobInfo:
    """A Job document as its record."""
    meta, spec, status = (
        as_mapping(raw.get("metadata")),
        as_mapping(raw.get("spec")),
        as_mapping(raw.get("status")),
    )
    return JobInfo(
        namespace=as_text(meta.get("namespace")) or "",
        name=as_text(meta.get("name")) or "",
        uid=as_str(meta.get("uid")) or "",
        labels=as_labels(meta.get("labels")),
        active=as_int(status.get("active")) or 0,
        succeeded=as_int(status.get("succeeded")) or 0,
        failed=as_int(status.get("failed")) or 0,
        backoff_limit=as_int(spec.get("backoffLimit")),
        conditions=_conditions(status.get("conditions")),
        deletion_timestamp=as_text(meta.get("deletionTimestamp")),
        finalizers=tuple(as_text(f) or "" for f in meta.get("finalizers") or ()),
        start_time=as_text(status.get("startTime")),
    )


def pod_info(raw: Mapping[str, Any]) -> PodInfo:
    """A Pod document as its record; every value a run's configuration sets is made inert."""
    meta, spec, status = (
        as_mapping(raw.get("metadata")),
        as_mapping(raw.get("spec")),
        as_mapping(raw.get("status")),
    )
    containers = tuple(_container_spec(c) for c in spec.get("containers") or () if isinstance(c, dict))
    ephemeral = tuple(
        _container_spec(c) for c in spec.get("ephemeralContainers") or () if isinstance(c, dict)
    )
    labels = as_labels(meta.get("labels"))
    run_id = next((c.flow_run_id for c in containers if c.flow_run_id), None) or labels.get(FLOW_RUN_LABEL)
    return PodInfo(
        namespace=as_text(meta.get("namespace")) or "",
        name=as_text(meta.get("name")) or "",
        uid=as_str(meta.get("uid")) or "",
        labels=labels,
        owners=tuple(
            OwnerRef(as_text(o.get("kind")) or "", as_text(o.get("name")) or "")
            for o in meta.get("ownerReferences") or ()
            if isinstance(o, dict)
        ),
        node_name=as_text(spec.get("nodeName")),
        phase=as_text(status.get("phase")) or "Unknown",
        reason=as_text(status.get("reason")),
        message=as_text(status.get("message")),
        deletion_timestamp=as_text(meta.get("deletionTimestamp")),
        deletion_grace_period_seconds=as_int(meta.get("deletionGracePeriodSeconds")),
        termination_grace_period_seconds=as_int(spec.get("terminationGracePeriodSeconds")),
        finalizers=tuple(as_text(f) or "" for f in meta.get("finalizers") or ()),
        start_time=as_text(status.get("startTime")),
        containers=containers,
        statuses=tuple(
            _container_state(s) for s in status.get("containerStatuses") or () if isinstance(s, dict)
        ),
        ephemeral_containers=ephemeral,
        ephemeral_statuses=tuple(
            _container_state(s) for s in status.get("ephemeralContainerStatuses") or () if isinstance(s, dict)
        ),
        share_process_namespace=bool(spec.get("shareProcessNamespace")),
        conditions=_conditions(status.get("conditions")),
        flow_run_id=visible_or_none(run_id),
        qos_class=as_text(status.get("qosClass")),
    )


def event_info(raw: Mapping[str, Any]) -> PodEvent:
    """An Event document as its record."""
    source = as_mapping(raw.get("source"))
    return PodEvent(
        type=as_text(raw.get("type")) or "Normal",
        reason=as_text(raw.get("reason")) or "",
        message=visible(as_str(raw.get("message")) or "", 500),
        count=as_int(raw.get("count")) or 1,
        last_seen=as_text(raw.get("lastTimestamp"))
        or as_text(raw.get("eventTime"))
        or as_text(raw.get("firstTimestamp")),
        source=as_text(source.get("component")) or as_text(raw.get("reportingComponent")),
    )


def node_info(raw: Mapping[str, Any]) -> NodeInfo:
    """A Node document's Ready condition."""
    meta, status = as_mapping(raw.get("metadata")), as_mapping(raw.get("status"))
    for condition in status.get("conditions") or ():
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            return NodeInfo(
                as_text(meta.get("name")) or "",
                as_text(condition.get("status")),
                as_text(condition.get("reason")),
                as_text(condition.get("message")),
                as_text(condition.get("lastTransitionTime")),
            )
    return NodeInfo(as_text(meta.get("name")) or "", None)


def _container_spec(raw: Mapping[str, Any]) -> ContainerSpec:
    env: dict[str, str] = {
        str(e.get("name")): str(e["value"])
        for e in raw.get("env") or ()
        if isinstance(e, dict) and isinstance(e.get("value"), str)
    }
    capabilities = as_mapping(as_mapping(raw.get("securityContext")).get("capabilities"))
    return ContainerSpec(
        name=as_text(raw.get("name")) or "",
        image=as_text(raw.get("image")),
        command=redact_argv(as_texts(raw.get("command"))),
        args=redact_argv(as_texts(raw.get("args"))),
        flow_run_id=visible_or_none(env.get(FLOW_RUN_ENV)),
        settings={k: visible(env[k]) for k in CANCEL_SETTINGS if k in env},
        target_container=as_text(raw.get("targetContainerName")),
        capabilities_add=as_texts(capabilities.get("add")),
    )


def _container_state(raw: Mapping[str, Any]) -> ContainerState:
    state = as_mapping(raw.get("state"))
    kind = next(
        (k for k in ("running", "terminated", "waiting") if isinstance(state.get(k), dict)), "unknown"
    )
    detail = as_mapping(state.get(kind))
    last = as_mapping(as_mapping(raw.get("lastState")).get("terminated"))
    return ContainerState(
        name=as_text(raw.get("name")) or "",
        state=kind,
        container_id=as_text(raw.get("containerID")),
        ready=bool(raw.get("ready")),
        restart_count=as_int(raw.get("restartCount")) or 0,
        reason=as_text(detail.get("reason")),
        message=as_text(detail.get("message")),
        exit_code=as_int(detail.get("exitCode")),
        signal=as_int(detail.get("signal")),
        started_at=as_text(detail.get("startedAt")),
        finished_at=as_text(detail.get("finishedAt")),
        last_reason=as_text(last.get("reason")),
        last_exit_code=as_int(last.get("exitCode")),
    )


def _conditions(value: Any) -> tuple[tuple[str, str | None], ...]:
    return tuple(
        (as_text(c.get("type")) or "", as_text(c.get("reason")))
        for c in value or ()
        if isinstance(c, dict) and c.get("status") == "True"
    )


def selector(labels: Mapping[str, str]) -> str:
    """A label selector for equality on each label."""
    return ",".join(f"{k}={v}" for k, v in labels.items())


def ordered_pods(pods: Sequence[PodInfo]) -> list[PodInfo]:
    """Newest first: a Job's retried pod supersedes the failed one."""
    return sorted(pods, key=lambda p: p.start_time or "", reverse=True)
