"""The ECS API through botocore (boto3's session: its credential chain, profiles, regions and
endpoints, `AWS_ENDPOINT_URL_ECS` included), its answers parsed at the boundary into frozen records.

boto3 is imported only when a client is made (`EcsApi`): a scan with no ECS run loads none of it.
Nothing outside this package reads the API's JSON: `EcsApi` returns `EcsTask`, `TaskDefinition` and
`ContainerInstance` records (`records`), and raises `EcsError` with what to do (`errors`).
"""

from __future__ import annotations

from prefect_cancel_doctor.clients.ecs_api.client import BATCH, EcsApi, region_of_arn
from prefect_cancel_doctor.clients.ecs_api.errors import EcsError
from prefect_cancel_doctor.clients.ecs_api.records import (
    ContainerDefinition,
    ContainerInstance,
    EcsContainer,
    EcsTask,
    TaskDefinition,
    parse_container_instance,
    parse_task,
    parse_task_definition,
)

__all__ = [
    "BATCH",
    "ContainerDefinition",
    "ContainerInstance",
    "EcsApi",
    "EcsContainer",
    "EcsError",
    "EcsTask",
    "TaskDefinition",
    "parse_container_instance",
    "parse_task",
    "parse_task_definition",
    "region_of_arn",
]
