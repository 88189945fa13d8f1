"""What only an ECS task can say: the findings the rules add (`diagnose.rules` asks the kind).

- `stop_story`: why and when ECS stopped the task, in words (OOM, Spot interruption, an essential
  container's exit, a failed start, a StopTask and by whom), as prefect-aws's ECS observer
  diagnoses it (`observers/diagnostics.py`), and more;
- `task_gone`: the verdict of a Cancelling run whose task stopped (`infrastructure_gone`);
- `task_facts`: evidence lines on every verdict (status, stop asked and not done past the
  container's stopTimeout, a command that runs no Runner, ECS Exec's readiness);
- `next_step`: for a running task this host cannot sample, where the doctor can (`not_attachable`);
- `stop_commands`: `aws ecs stop-task`, then wait for STOPPED.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timezone

from prefect_cancel_doctor.core.durations import seconds_text
from prefect_cancel_doctor.core.remedies import remediation, short_fix
from prefect_cancel_doctor.model import Cause, TaskFacts, TimelineEntry, TimelineSource, Verdict

#: The reason `resolve` and the by-hand line give StopTask (ECS keeps it as stoppedReason).
STOP_REASON = "prefect-cancel-doctor: flow run stuck in Cancelling"
#: What prefect-aws's worker gives StopTask (`_stop_task`).
WORKER_STOP_REASON = "Stopped by Prefect worker"
#: The command that runs a Runner in the container (prefect-aws's default).
RUNNER_COMMAND = ("flow-run", "execute")


def _ago(iso: str | None, now: datetime) -> float | None:
    if not iso:
        return None
    try:
        moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (now - moment).total_seconds()


def _oom(task: TaskFacts) -> bool:
    return any("OutOfMemory" in (c.reason or "") for c in task.containers)


def stop_story(task: TaskFacts) -> str:
    """Why and when the task stopped, in one clause ("stopped at … : …")."""
    if not task.known:
        why = task.missing or "MISSING"
        return (
            f"is no longer known to ECS ({why}; ECS keeps a stopped task for about an hour): it stopped, "
            "and why can no longer be read"
        )
    when = f" at {task.stopped_at or task.stopping_at}" if (task.stopped_at or task.stopping_at) else ""
    code, reason = task.stop_code or "", task.stopped_reason or ""
    parts: list[str] = []
    if code == "TaskFailedToStart" or "CannotPullContainerError" in reason:
        parts.append(f"failed to start ({code or 'CannotPullContainerError'}: {reason or 'no reason given'})")
    elif code == "SpotInterruption" or "spot" in reason.lower():
        parts.append(f"was stopped by a Spot interruption ({code}: {reason or 'capacity reclaimed'})")
    elif code == "TerminationNotice":
        parts.append(f"was stopped by a termination notice of its host ({reason or code})")
    elif code == "EssentialContainerExited":
        parts.append(f"stopped because an essential container exited ({reason or code})")
    elif code == "UserInitiated":
        who = (
            "prefect-aws's worker (kill_infrastructure)"
            if reason == WORKER_STOP_REASON
            else "a StopTask call"
        )
        parts.append(f"was stopped by {who}" + (f" ({reason})" if reason else ""))
    elif code == "ServiceSchedulerInitiated":
        parts.append(f"was stopped by its ECS service's scheduler ({reason or code})")
    else:
        parts.append(f"stopped ({code or 'no stop code'}: {reason or 'no reason given'})")
    for container in task.containers:
        if container.exit_code is None and not container.reason:
            continue
        line = f"container {container.name}"
        line += f" exited with code {container.exit_code}" if container.exit_code is not None else " stopped"
        if container.reason:
            line += f" ({container.reason})"
        if "OutOfMemory" in (container.reason or ""):
            line += ": the kernel's OOM killer ended it for using more memory than its limit"
        elif container.exit_code == 137:
            line += ": SIGKILLed (ECS's stop after its stopTimeout, or the OOM killer)"
        parts.append(line)
    return f"stopped{when}: " + "; ".join(parts)


def task_gone(task: TaskFacts, notes: tuple[str, ...]) -> Verdict:
    """`infrastructure_gone` for a Cancelling run whose task no longer runs."""
    story = stop_story(task)
    summary = f"The run's ECS task {task.name} {story}. Only the API state is stuck in Cancelling."
    fixes = list(remediation(Cause.INFRASTRUCTURE_GONE, None))
    if _oom(task):
        fixes.append("raise the task's memory (the work pool's `memory`, or the task definition's)")
    if task.stop_code == "SpotInterruption":
        fixes.append("run runs that must not be interrupted on FARGATE or on-demand capacity, not Spot")
    if task.stop_code == "TaskFailedToStart":
        fixes.append("check the image, the execution role's permissions and the networking of the task")
    fixes.append(
        "enable prefect-aws's ECS observer (EventBridge → SQS) so a stopped task's run is marked Crashed "
        "(it does not act on a task that exits 0)"
    )
    return Verdict(
        cause=Cause.INFRASTRUCTURE_GONE,
        summary=summary,
        confidence=0.9,
        blocking_call=None,
        evidence=(*notes, f"ECS task {task.name} {story}"),
        remediation=tuple(fixes),
        short_fix=short_fix(Cause.INFRASTRUCTURE_GONE, None),
    )


def runs_no_runner(command: tuple[str, ...]) -> bool:
    """A job command that starts the flow engine without a Runner (nothing in the task acts on a cancel)."""
    text = " ".join(command)
    return bool(command) and " ".join(RUNNER_COMMAND) not in text and "prefect.engine" in text


def task_facts(task: TaskFacts, now: datetime | None = None) -> tuple[str, ...]:
    """Evidence lines about the task, for every verdict of its run. Where this host samples it
    (`local_container`), its container's own facts and rules say its command, its Runner and its
    PID 1, from the container itself."""
    if not task.known:
        return ()
    now = now or datetime.now(timezone.utc)
    where = "Fargate" if task.on_fargate else (task.launch_type or "?")
    facts = [
        f"ECS task {task.name}: lastStatus {task.last_status}, desiredStatus {task.desired_status}, "
        f"launch type {where}" + (f", started at {task.started_at}" if task.started_at else "")
    ]
    command = () if task.local_container else task.command
    if command:
        facts.append(f"container {task.container_name}: command `{' '.join(command)[:160]}`")
    if runs_no_runner(command):
        facts.append(
            "the task's command runs the flow engine without a Prefect Runner (`prefect flow-run execute`): "
            "nothing in the task acts on a cancel"
        )
    stopping = task.desired_status == "STOPPED" and not task.gone
    if stopping:
        since = task.stopping_at
        ago = _ago(since, now)
        timeout = task.stop_timeout
        if ago is not None and ago > timeout:
            agent = ""
            if task.agent_connected is False:
                agent = f"; the ECS agent of its container instance ({task.ec2_instance_id}) is disconnected"
            facts.append(
                f"ECS was asked to stop the task at {since}, {seconds_text(ago)} ago, past its container's "
                f"stopTimeout of {timeout} s: ECS's SIGKILL should have ended it and did not{agent}"
            )
        else:
            facts.append(
                "ECS is stopping the task (desiredStatus STOPPED"
                + (f" since {since}" if since else "")
                + f"): SIGTERM, then SIGKILL after its stopTimeout of {timeout} s"
            )
    # Where this host samples the task, its real PID 1 is read and the container rules say what it does.
    if task.init_process_enabled is False and command and not task.gone and not task.local_container:
        facts.append(
            f"container {task.container_name} runs without ECS's init (its task definition does not set "
            "linuxParameters.initProcessEnabled): its command is PID 1, and if that is a shell or a process "
            f"without a SIGTERM handler, StopTask's SIGTERM is dropped and ECS SIGKILLs it after "
            f"{task.stop_timeout} s, before on_cancellation hooks"
        )
    return tuple(facts)


def exec_line(task: TaskFacts) -> str:
    """The `aws ecs execute-command` line that dumps the flow's stacks from inside the task."""
    return (
        f"aws ecs execute-command --cluster {shlex.quote(task.cluster_name)} "
        f"--task {shlex.quote(task.task_id)} "
        f"--container {shlex.quote(task.container_name)} --interactive "
        '--command "py-spy dump --subprocesses --pid 1"'
    )


def exec_needs(task: TaskFacts) -> list[str]:
    """What the task lacks for `exec_line` to work."""
    needs = []
    if task.known and not task.enable_execute_command:
        needs.append(
            "the task was started without ECS Exec (enableExecuteCommand): start tasks with it (the ECS "
            "work pool's task run request, `enableExecuteCommand: true`) and give the task role "
            "ssmmessages:* permissions"
        )
    if not task.sys_ptrace:
        needs.append(
            f"py-spy needs SYS_PTRACE: add it to container {task.container_name}'s "
            "linuxParameters.capabilities.add in the task definition"
        )
    needs.append("py-spy must be installed in the image")
    return needs


def next_step(task: TaskFacts) -> str:
    """Why a running task cannot be sampled from here, and where it can be (the verdict's fixes,
    `fixes_for`, give the host or the `aws ecs execute-command` line and what it needs)."""
    if not task.on_fargate and task.ec2_instance_id:
        return (
            f"the run's ECS task {task.name} runs on EC2 container instance {task.ec2_instance_id}, not on "
            "this host: the doctor samples it there, or from inside the task with ECS Exec"
        )
    where = "on Fargate (no host to run the doctor on)" if task.on_fargate else "elsewhere than this host"
    return f"the run's ECS task {task.name} runs {where}: ECS Exec can sample it from inside the task"


def stop_commands(task: TaskFacts) -> tuple[str, ...]:
    """StopTask (SIGTERM, SIGKILL after the stopTimeout), then wait for ECS to say STOPPED."""
    cluster, arn = shlex.quote(task.cluster), shlex.quote(task.task_arn)
    return (
        f"aws ecs stop-task --cluster {cluster} --task {arn} --reason {shlex.quote(STOP_REASON)} >/dev/null",
        f"aws ecs wait tasks-stopped --cluster {cluster} --tasks {arn}",
    )


def short_fix_for(task: TaskFacts | None, cause: Cause) -> str | None:
    if cause is Cause.NOT_ATTACHABLE and task is not None and task.running:
        return (
            "ECS Exec: py-spy in the task"
            if task.on_fargate or not task.ec2_instance_id
            else ("run the doctor on its EC2 host")
        )
    if cause is Cause.ORPHANED_INFRASTRUCTURE:
        return "aws ecs stop-task"
    return None


def fixes_for(task: TaskFacts | None, cause: Cause) -> tuple[str, ...] | None:
    """`not_attachable`'s fixes for a running task this host cannot sample (None: the generic ones)."""
    if cause is not Cause.NOT_ATTACHABLE or task is None or not task.running or task.local_container:
        return None
    exec_fix = f"sample it from inside the task with ECS Exec: `{exec_line(task)}`"
    needs = tuple(f"for ECS Exec: {need}" for need in exec_needs(task))
    if not task.on_fargate and task.ec2_instance_id:
        host = (
            f"run the doctor on EC2 container instance {task.ec2_instance_id} (as root): the task's "
            "containers are Docker containers of its engine, and the doctor samples them there"
        )
        return (host, exec_fix, *needs)
    return (exec_fix, *needs)


def task_timeline(task: TaskFacts) -> tuple[TimelineEntry, ...]:
    """The task's start, the stop ECS was asked for, and its stop, as ECS dates them."""
    source = TimelineSource.INFRASTRUCTURE
    entries = []
    if task.started_at:
        entries.append(TimelineEntry(task.started_at, f"ECS task {task.name} started", source))
    if task.stopping_at:
        began = (
            f"StopTask was called for ECS task {task.name}"
            if task.stop_code == "UserInitiated"
            else f"ECS began stopping task {task.name}"
        )
        why = f" ({task.stopped_reason})" if task.stopped_reason else ""
        entries.append(TimelineEntry(task.stopping_at, began + why, source))
    if task.stopped_at:
        code = f" ({task.stop_code})" if task.stop_code else ""
        entries.append(TimelineEntry(task.stopped_at, f"ECS task {task.name} stopped{code}", source))
    return tuple(entries)
