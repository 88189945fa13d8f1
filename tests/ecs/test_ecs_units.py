"""The ECS kind without AWS: `infrastructure_pid` forms, DescribeTasks parsed at the boundary, and the
task-facts rules on recorded answers (OOM, Spot, failed start, stopped by the worker, a stop not done
past the stopTimeout, a Fargate task's ECS Exec line); one DescribeTasks per cluster per 100 tasks."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from prefect_cancel_doctor.clients.ecs_api import (
    EcsTask,
    parse_container_instance,
    parse_task,
    parse_task_definition,
)
from prefect_cancel_doctor.kinds.ecs.facts import (
    fixes_for,
    next_step,
    stop_commands,
    stop_story,
    task_facts,
    task_gone,
    task_timeline,
)
from prefect_cancel_doctor.kinds.ecs.kind import EcsKind
from prefect_cancel_doctor.kinds.ecs.locate import split_target
from prefect_cancel_doctor.kinds.ecs.read import read_tasks
from prefect_cancel_doctor.kinds.ecs.view import TaskView
from prefect_cancel_doctor.kinds.registry import parse_infrastructure_pid
from prefect_cancel_doctor.model import Cause, InfraKind, Target, to_plain

RECORDED = json.loads((Path(__file__).parent / "recorded" / "describe_tasks.json").read_text())
ARN = "arn:aws:ecs:eu-west-1:111122223333:task/prod/"


def _task(suffix: str) -> EcsTask:
    task = next(parse_task(t) for t in RECORDED["tasks"] if t["taskArn"].startswith(ARN + suffix))
    assert task is not None
    return task


def _view(suffix: str, **more: Any) -> TaskView:
    task = _task(suffix)
    return TaskView("prod", task.arn, task, **more)


def test_prefect_aws_identifier_is_an_ecs_task_and_other_forms_are_not() -> None:
    raw = "prod::" + ARN + "0a1b2c3d4e5f4a5b8c9d0e1f2a3b4c5d"
    ref = parse_infrastructure_pid(raw)

    assert ref.kind is InfraKind.ECS
    assert (ref.namespace, ref.job) == ("prod", ARN + "0a1b2c3d4e5f4a5b8c9d0e1f2a3b4c5d")
    if importlib.util.find_spec("prefect_aws") is not None:  # not in the test extra (pyproject.toml)
        from prefect_aws.workers.ecs_worker import parse_identifier  # prefect-aws's own reading

        theirs = parse_identifier(raw)
        assert (ref.namespace, ref.job) == (theirs.cluster, theirs.task_arn)
    assert EcsKind().describe(ref, True) == "ECS task prod/0a1b2c3d4e5f4a5b8c9d0e1f2a3b4c5d"
    arn_cluster = parse_infrastructure_pid("arn:aws:ecs:eu-west-1:1:cluster/prod::" + ARN + "x")
    assert arn_cluster.kind is InfraKind.ECS
    assert arn_cluster.namespace == "arn:aws:ecs:eu-west-1:1:cluster/prod"
    assert parse_infrastructure_pid("3055").kind is InfraKind.PROCESS
    assert parse_infrastructure_pid("http+docker://localhost:" + "a" * 64).kind is InfraKind.DOCKER
    assert parse_infrastructure_pid("default:etl-x7k2p").kind is InfraKind.KUBERNETES
    assert parse_infrastructure_pid("::").kind is InfraKind.UNKNOWN


def test_split_target_reads_cluster_slash_task_a_task_arn_and_the_identifier() -> None:
    assert split_target("prod/abc") == ("prod", "abc")
    assert split_target(ARN + "abc") == ("prod", ARN + "abc")
    assert split_target("prod::" + ARN + "abc") == ("prod", ARN + "abc")


def test_describe_tasks_is_parsed_at_the_boundary() -> None:
    task = _task("0a1b")
    definition = parse_task_definition(RECORDED["taskDefinition"])
    instance = parse_container_instance(RECORDED["containerInstance"])

    assert task.flow_run_id == "7b0c6a55-6a3e-4d8e-9a52-5b1d2f0e9c11"
    assert task.on_fargate and task.last_status == "STOPPED"
    assert task.containers[0].exit_code == 137
    assert task.stopped_at == "2026-12-06T09:40:12.500000+00:00"
    assert task.override_commands == {"prefect": ("prefect", "flow-run", "execute")}
    assert definition is not None and definition.containers[0].stop_timeout == 45
    assert definition.containers[0].init_process_enabled
    assert instance is not None and instance.ec2_instance_id == "i-0abc123def4567890"
    assert instance.agent_connected is False
    assert _task("4444").containers[0].exec_agent == "RUNNING"
    assert parse_task({"taskArn": 7}) is None
    assert parse_task({"taskArn": "arn:x", "containers": "nope", "overrides": []}) is not None


def test_an_oom_killed_essential_container_is_infrastructure_gone_naming_it() -> None:
    view = _view("0a1b")
    verdict = task_gone(view.facts(), ("a note",))

    assert view.gone
    assert verdict.cause is Cause.INFRASTRUCTURE_GONE
    assert "prod/0a1b2c3d4e5f4a5b8c9d0e1f2a3b4c5d" in verdict.summary
    assert "essential container exited" in verdict.summary
    assert "exited with code 137 (OutOfMemoryError: Container killed due to memory usage)" in verdict.summary
    assert "OOM killer" in verdict.summary
    assert verdict.evidence[0] == "a note"
    assert any("memory" in fix for fix in verdict.remediation)


@pytest.mark.parametrize(
    ("suffix", "words"),
    [
        ("1111", "was stopped by a Spot interruption (SpotInterruption: Your Spot Task was interrupted.)"),
        ("2222", "failed to start (TaskFailedToStart: CannotPullContainerError"),
        ("3333", "was stopped by prefect-aws's worker (kill_infrastructure) (Stopped by Prefect worker)"),
    ],
)
def test_why_ecs_stopped_the_task(suffix: str, words: str) -> None:
    assert words in stop_story(_view(suffix).facts())


def test_a_task_ecs_no_longer_knows_is_gone() -> None:
    view = TaskView("prod", ARN + "gone", missing="MISSING")

    assert view.gone and not view.running
    assert "no longer known to ECS (MISSING" in task_gone(view.facts(), ()).summary


def test_a_task_running_past_its_stop_timeout_says_ecs_did_not_kill_it() -> None:
    definition = parse_task_definition(RECORDED["taskDefinition"])
    instance = parse_container_instance(RECORDED["containerInstance"])
    view = _view("4444", definition=definition, instance=instance)
    now = datetime(2026, 12, 6, 9, 50, tzinfo=timezone.utc)  # 10 minutes after stoppingAt

    facts = task_facts(view.facts(), now)

    assert view.running and view.stop_timeout == 45
    assert any(
        "past its container's stopTimeout of 45 s: ECS's SIGKILL should have ended it and did not" in f
        and "i-0abc123def4567890) is disconnected" in f
        for f in facts
    ), facts
    assert any("runs the flow engine without a Prefect Runner" in f for f in facts), facts
    step = next_step(view.facts())
    assert (
        "on EC2 container instance i-0abc123def4567890, not on this host: the doctor samples it there" in step
    )


def test_a_running_fargate_task_gets_the_execute_command_line_and_what_it_lacks() -> None:
    view = _view("5555", definition=parse_task_definition(RECORDED["taskDefinition"]))
    step = next_step(view.facts())
    fixes = " ".join(fixes_for(view.facts(), Cause.NOT_ATTACHABLE) or ())

    assert "runs on Fargate (no host to run the doctor on)" in step
    assert (
        "`aws ecs execute-command --cluster prod --task 5555aaaa2222bbbb3333cccc4444dddd --container prefect "
        '--interactive --command "py-spy dump --subprocesses --pid 1"`'
    ) in fixes
    assert "enableExecuteCommand" in fixes and "SYS_PTRACE" in fixes
    assert stop_commands(view.facts())[0].startswith(f"aws ecs stop-task --cluster prod --task {ARN}5555")


class _CountingApi:
    """Answers DescribeTasks from the recorded tasks, counting calls and ARNs per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def describe_tasks(
        self, cluster: str, arns: list[str], region: str | None = None
    ) -> tuple[dict[str, EcsTask], dict[str, str]]:
        for start in range(0, len(arns), 100):
            self.calls.append((cluster, len(arns[start : start + 100])))
        return {}, {arn: "MISSING" for arn in arns}

    def describe_task_definition(self, arn: str) -> None:
        raise AssertionError("no running task: no task definition to read")

    def describe_container_instances(self, cluster: str, arns: list[str], region: str | None = None) -> None:
        raise AssertionError("no running task: no container instance to read")


def test_a_scan_reads_tasks_one_call_per_cluster_per_100() -> None:
    api = _CountingApi()
    identifiers = [("prod", f"{ARN}{i:032x}") for i in range(250)]
    identifiers += [("dev", f"{ARN}{i:032x}") for i in range(20)]

    views = read_tasks(identifiers, api)  # type: ignore[arg-type]

    assert len(views) == 270 and all(v.gone for v in views.values())
    assert api.calls == [("prod", 100), ("prod", 100), ("prod", 50), ("dev", 20)]


def test_no_boto3_is_a_clear_error_with_the_extra_to_install() -> None:
    from prefect_cancel_doctor.clients.ecs_api.errors import classify

    error = classify(ModuleNotFoundError("No module named 'boto3'"), "DescribeTasks")

    assert "boto3 is not installed" in str(error)
    assert error.hint is not None and "prefect-cancel-doctor[ecs]" in error.hint


def _target(view: TaskView) -> Target:
    return Target(kind=InfraKind.ECS, description=f"ECS task {view.name}", task=view.facts())


def test_a_fargate_task_not_sampled_here_is_fixed_by_ecs_exec_not_by_another_host() -> None:
    view = _view("5555", definition=parse_task_definition(RECORDED["taskDefinition"]))
    kind = EcsKind()

    fixes = kind.fixes(_target(view), Cause.NOT_ATTACHABLE)

    assert fixes is not None
    assert fixes[0].startswith("sample it from inside the task with ECS Exec: `aws ecs execute-command")
    assert any("enableExecuteCommand" in f for f in fixes) and any("SYS_PTRACE" in f for f in fixes)
    assert not any("run the doctor on the host" in f for f in fixes)
    assert kind.short_fix(_target(view), Cause.NOT_ATTACHABLE) == "ECS Exec: py-spy in the task"
    assert kind.fixes(_target(view), Cause.SIGNAL_IGNORED) is None  # the cause's own fixes


def test_an_ec2_task_elsewhere_is_fixed_first_by_running_the_doctor_on_its_instance() -> None:
    view = _view(
        "4444",
        definition=parse_task_definition(RECORDED["taskDefinition"]),
        instance=parse_container_instance(RECORDED["containerInstance"]),
    )

    fixes = EcsKind().fixes(_target(view), Cause.NOT_ATTACHABLE)

    assert fixes is not None and fixes[0].startswith(
        "run the doctor on EC2 container instance i-0abc123def4567890"
    )
    assert "aws ecs execute-command" in fixes[1]
    assert EcsKind().short_fix(_target(view), Cause.NOT_ATTACHABLE) == "run the doctor on its EC2 host"


def test_the_task_is_in_the_json_of_the_target() -> None:
    view = _view("0a1b")

    plain = to_plain(_target(view))

    assert plain["task"]["task_arn"] == view.task_arn
    assert plain["task"]["stop_code"] == "EssentialContainerExited"
    assert plain["task"]["containers"][0]["exit_code"] == 137
    assert plain["task"]["on_fargate"] is True


def test_the_tasks_start_stop_request_and_stop_are_dated_in_the_runs_timeline() -> None:
    from prefect_cancel_doctor.diagnose.timeline import build

    stopping = build(None, infrastructure=EcsKind().timeline(_target(_view("4444"))))
    stopped = build(None, infrastructure=EcsKind().timeline(_target(_view("1111"))))

    assert [(e.at, e.what) for e in stopping] == [
        ("2026-12-06T09:23:20Z", "ECS task prod/4444aaaa2222bbbb3333cccc4444dddd started"),
        ("2026-12-06T09:40:00Z", "ECS began stopping task prod/4444aaaa2222bbbb3333cccc4444dddd"),
    ]
    assert [e.source for e in stopping] == ["infrastructure", "infrastructure"]
    assert stopped[-1].what == "ECS task prod/1111aaaa2222bbbb3333cccc4444dddd stopped (SpotInterruption)"
    assert EcsKind().timeline(Target(kind=InfraKind.ECS, description="x")) == ()


def test_a_stop_task_call_is_named_as_one_and_a_local_tasks_pid1_is_left_to_its_sample() -> None:
    from prefect_cancel_doctor.model import TaskFacts

    stopped = TaskFacts(
        "prod",
        ARN + "9",
        "prod",
        last_status="RUNNING",
        desired_status="STOPPED",
        stop_code="UserInitiated",
        stopped_reason="Stopped by Prefect worker",
        stopping_at="2026-12-06T09:40:00+00:00",
        command=("python", "-m", "prefect.engine"),
        init_process_enabled=False,
    )
    (entry,) = task_timeline(stopped)
    assert entry.what == "StopTask was called for ECS task prod/9 (Stopped by Prefect worker)"
    elsewhere = task_facts(stopped)
    here = task_facts(dataclasses.replace(stopped, local_container="c" * 64))
    assert any("runs without ECS's init" in f for f in elsewhere)
    assert not any("runs without ECS's init" in f for f in here)


def test_the_published_verdict_names_the_ecs_task() -> None:
    from prefect_cancel_doctor.fleet.publish import Related, Seen, verdict_event
    from tests.render.test_render import sleeping

    view = _view("0a1b")
    d = sleeping()
    d = dataclasses.replace(d, target=_target(view), verdict=task_gone(view.facts(), ()))

    payload = verdict_event(d, "node-7", Seen("node-7", (), ()), Related())["payload"]

    assert payload["target"] == f"ECS task {view.name}"
    assert payload["cause"] == "infrastructure_gone" and "OutOfMemoryError" in payload["summary"]
