"""What only a container can say: the Docker findings the rules add (`diagnose.rules`).

- `container_gone`: the verdict when nothing of a Cancelling run runs in its container any more
  (removed, exited, OOM-killed, restarting) or its processes are frozen (paused);
- `container_facts`: evidence lines about the container's configuration, added to every verdict;
- `container_stop_now`: what ends the run's container now.
"""

from __future__ import annotations

from prefect_cancel_doctor.core.remedies import remediation, short_fix
from prefect_cancel_doctor.model import CONTAINER_NOT_FOUND, AttachMode, Cause, ContainerInfo, Verdict


def container_gone(container: ContainerInfo, notes: tuple[str, ...]) -> Verdict:
    """`infrastructure_gone` (or `not_attachable` when paused) for a run whose container runs nothing."""
    if container.status == "paused":
        return _verdict(
            Cause.NOT_ATTACHABLE,
            f"The run's container {container.id[:12]} is paused: its processes are frozen and "
            "cannot be sampled or signalled.",
            0.8,
            notes,
            extra_fixes=(f"docker unpause {container.id[:12]}",),
        )
    if container.status == CONTAINER_NOT_FOUND:
        what = "was removed"
    elif container.oom_killed:
        what = f"was OOM-killed (exit code {container.exit_code})"
    elif container.status == "restarting":
        what = f"is restarting (restart count {container.restart_count}, policy {container.restart_policy})"
    else:
        what = f"is {container.status}" + (
            f" with exit code {container.exit_code}" if container.exit_code is not None else ""
        )
    return _verdict(
        Cause.INFRASTRUCTURE_GONE,
        f"The run's container {container.id[:12] or '?'} {what}; only the API state is stuck in "
        "Cancelling (nothing is left to report Cancelled).",
        0.9,
        notes,
    )


def _verdict(
    cause: Cause, summary: str, confidence: float, notes: tuple[str, ...], extra_fixes: tuple[str, ...] = ()
) -> Verdict:
    return Verdict(
        cause=cause,
        summary=summary,
        confidence=confidence,
        blocking_call=None,
        evidence=notes,
        remediation=remediation(cause, None) + extra_fixes,
        short_fix=short_fix(cause, None),
    )


def container_facts(container: ContainerInfo) -> tuple[str, ...]:
    """What a container's configuration says about how it can be stopped."""
    if container.status == CONTAINER_NOT_FOUND:
        return ()
    facts = [
        f"container {container.name or container.id[:12]}: image {container.image}, "
        f"status {container.status}, command `{' '.join(container.command)[:120]}`"
        + (f", entrypoint `{' '.join(container.entrypoint)[:80]}`" if container.entrypoint else "")
    ]
    if container.stop_signal and container.stop_signal not in ("SIGTERM", "TERM", "15"):
        facts.append(
            f"its StopSignal is {container.stop_signal}: `docker stop` sends that, not SIGTERM, "
            "so Prefect's SIGTERM handling does not run"
        )
    if container.stop_timeout is not None and container.stop_timeout < 10:
        facts.append(
            f"its stop timeout is {container.stop_timeout} s: `docker stop` SIGKILLs before "
            "cleanup and on_cancellation hooks can finish"
        )
    if container.attach != AttachMode.NONE:
        where = "the host" if container.attach == AttachMode.HOST else "a sidecar container"
        facts.append(f"sampled from {where}")
    if container.stats is not None and container.running:
        stats = container.stats
        memory = f"{stats.memory_bytes / 2**20:.0f} MiB" if stats.memory_bytes is not None else "?"
        cpu = f"{stats.cpu_percent:.0f} %" if stats.cpu_percent is not None else "?"
        facts.append(f"it uses {cpu} CPU and {memory} of memory, started at {container.started_at}")
    return tuple(facts)
