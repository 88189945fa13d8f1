"""`EcsApi`: the few ECS calls the doctor makes, batched, through one boto3 session.

Credentials, profile, region and endpoint are boto3's own (AWS_PROFILE, AWS_REGION,
AWS_ENDPOINT_URL_ECS / AWS_ENDPOINT_URL, instance and task roles); a task's ARN names its region,
which wins over the configured one (the task lives there).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from prefect_cancel_doctor.clients.ecs_api.errors import EcsError, classify
from prefect_cancel_doctor.clients.ecs_api.records import (
    ContainerInstance,
    EcsTask,
    TaskDefinition,
    parse_container_instance,
    parse_task,
    parse_task_definition,
)

#: DescribeTasks and DescribeContainerInstances take at most 100 ARNs a call.
BATCH = 100


def region_of_arn(arn: str | None) -> str | None:
    """The region of an ARN (``arn:aws:ecs:REGION:ACCOUNT:...``), else None."""
    parts = (arn or "").split(":")
    return parts[3] or None if len(parts) > 5 and parts[0] == "arn" else None


def _chunks(items: Sequence[str], size: int = BATCH) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class EcsApi:
    """ECS through boto3, one client a region, made on first use (boto3 is imported then)."""

    def __init__(self, *, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._clients: dict[str | None, Any] = {}
        self._session: Any = None
        self._lock = threading.Lock()
        #: How many calls were made, by action (the scan's budget: one DescribeTasks per cluster per 100).
        self.calls: dict[str, int] = {}

    def _client(self, region: str | None) -> Any:
        with self._lock:
            if region not in self._clients:
                import boto3
                from botocore.config import Config

                if self._session is None:
                    self._session = boto3.session.Session()
                # botocore reads AWS_DEFAULT_REGION; AWS_REGION is what ECS tasks, Lambda and the other
                # SDKs set: read too, after the profile's.
                region = region or self._session.region_name or os.environ.get("AWS_REGION") or None
                config = Config(
                    connect_timeout=min(self.timeout, 5.0),
                    read_timeout=self.timeout,
                    retries={"max_attempts": 2, "mode": "standard"},
                    user_agent_extra="prefect-cancel-doctor",
                )
                self._clients[region] = self._session.client("ecs", region_name=region, config=config)
            return self._clients[region]

    def _call(self, region: str | None, action: str, **kwargs: Any) -> dict[str, Any]:
        self.calls[action] = self.calls.get(action, 0) + 1
        try:
            client = self._client(region)
            method = {
                "DescribeTasks": "describe_tasks",
                "DescribeTaskDefinition": "describe_task_definition",
                "DescribeContainerInstances": "describe_container_instances",
                "StopTask": "stop_task",
            }[action]
            answer = getattr(client, method)(**kwargs)
        except Exception as exc:  # botocore's family, and whatever its credential providers raise
            raise classify(exc, action) from exc
        return answer if isinstance(answer, dict) else {}

    def describe_tasks(
        self, cluster: str, arns: Sequence[str], region: str | None = None
    ) -> tuple[dict[str, EcsTask], dict[str, str]]:
        """The tasks by ARN, and the ARNs ECS does not know with its reason (MISSING), one call a 100."""
        found: dict[str, EcsTask] = {}
        missing: dict[str, str] = {}
        for chunk in _chunks(list(dict.fromkeys(arns))):
            answer = self._call(region, "DescribeTasks", cluster=cluster, tasks=list(chunk), include=["TAGS"])
            for document in answer.get("tasks") or []:
                task = parse_task(document)
                if task is not None:
                    found[task.arn] = task
            for failure in answer.get("failures") or []:
                if isinstance(failure, dict) and isinstance(failure.get("arn"), str):
                    missing[failure["arn"]] = str(failure.get("reason") or "MISSING")
        # A task given by id (not ARN) comes back under its ARN.
        for arn in arns:
            if arn not in found and arn not in missing:
                match = next((t for t in found.values() if t.task_id == arn.rsplit("/", 1)[-1]), None)
                if match is not None:
                    found[arn] = match
                else:
                    missing[arn] = "MISSING"
        return found, missing

    def describe_task_definition(self, arn: str) -> TaskDefinition | None:
        answer = self._call(region_of_arn(arn), "DescribeTaskDefinition", taskDefinition=arn)
        return parse_task_definition(answer.get("taskDefinition"))

    def describe_container_instances(
        self, cluster: str, arns: Sequence[str], region: str | None = None
    ) -> dict[str, ContainerInstance]:
        found: dict[str, ContainerInstance] = {}
        for chunk in _chunks(list(dict.fromkeys(arns))):
            answer = self._call(
                region, "DescribeContainerInstances", cluster=cluster, containerInstances=chunk
            )
            for document in answer.get("containerInstances") or []:
                instance = parse_container_instance(document)
                if instance is not None:
                    found[instance.arn] = instance
        return found

    def stop_task(self, cluster: str, arn: str, reason: str) -> EcsTask | None:
        """`StopTask`: ECS sends SIGTERM, then SIGKILL after each container's stopTimeout."""
        answer = self._call(region_of_arn(arn), "StopTask", cluster=cluster, task=arn, reason=reason[:255])
        return parse_task(answer.get("task"))


__all__ = ["BATCH", "EcsApi", "EcsError", "region_of_arn"]
