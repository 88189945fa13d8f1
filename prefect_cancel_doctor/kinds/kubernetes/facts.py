"""What only a pod can say: the Kubernetes findings the rules add (`diagnose.rules`).

- `pod_gone`: the verdict when nothing of a Cancelling run runs in its pod any
  more: the Job and its pods deleted, the flow container OOMKilled or exited,
  the pod evicted, its node NotReady, or the pod Terminating past its grace
  period and held by finalizers (`infrastructure_gone`, with the reason). The
  Job controller's own ``batch.kubernetes.io/job-tracking`` finalizer, on every
  Job pod until the controller has counted it, is told apart: held by it alone
  and recently, the pod is about to go (nothing is stuck); held by it for long,
  the Job controller is down or behind.
- `pod_facts`: evidence lines about the pod, added to every verdict of a
  Kubernetes run (attach mode, a Job deleted with its pod alive, Terminating and
  finalizers, the Job's backoffLimit, the container's command and Prefect
  settings, the ephemeral containers left in its spec, recent events).
- `pod_stop_commands`: what ends the run now, as kubectl commands.
"""

from __future__ import annotations

import json
import shlex

from prefect_cancel_doctor.core.durations import seconds_text
from prefect_cancel_doctor.core.remedies import remediation, short_fix
from prefect_cancel_doctor.model import Cause, PodAttach, PodFacts, Verdict

#: The prefect-kubernetes job command that runs a Runner in the pod.
RUNNER_COMMAND = ("prefect", "flow-run", "execute")
#: The finalizer the Job controller puts on each pod of a Job (Kubernetes 1.26+) and removes once it has
#: counted the pod: a deleted pod loses it within seconds.
JOB_TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
#: Seconds after its deletion for which a pod still held by the job-tracking finalizer is only waiting for
#: the Job controller's next sync; past them the controller is down or far behind.
JOB_TRACKING_PATIENCE = 120.0
#: Event reasons worth naming (the kubelet's and the eviction manager's).
NOTABLE_EVENTS = frozenset(
    {
        "Killing",
        "FailedKillPod",
        "Evicted",
        "OOMKilling",
        "Preempting",
        "NodeNotReady",
        "BackOff",
        "Failed",
        "FailedPreStopHook",
        "ExceededGracePeriod",
    }
)


def _where(pod: PodFacts) -> str:
    return f"pod {pod.namespace}/{pod.name}" if pod.name else f"Job {pod.namespace}/{pod.job}"


def runs_runner(command: tuple[str, ...]) -> bool:
    """Whether a container command runs Prefect's Runner (`prefect flow-run execute`)."""
    words = list(command)
    return any(
        tuple(words[i : i + 3]) == RUNNER_COMMAND or tuple(words[i + 1 : i + 4]) == RUNNER_COMMAND
        for i in range(len(words))
    )


def pod_gone(pod: PodFacts, notes: tuple[str, ...]) -> Verdict:
    """`infrastructure_gone` for a Cancelling run none of whose processes runs in its pod any more."""
    evidence = list(notes)
    where = _where(pod)
    confidence = 0.9
    if pod.name is None:
        what = (
            f"its Job {pod.namespace}/{pod.job} and the Job's pods no longer exist"
            if pod.job_exists is False
            else f"its Job {pod.namespace}/{pod.job} has no pod left"
        )
    elif pod.reason == "Evicted":
        what = f"{where} was evicted by the kubelet ({pod.message or 'node pressure'})"
    elif pod.node_ready not in (None, "True") and not pod.running:
        what = (
            f"{where} is on node {pod.node} that is not Ready ({pod.node_reason}): "
            "its containers are stopped or unreachable"
        )
        confidence = 0.75
    elif pod.node_ready not in (None, "True"):
        what = (
            f"{where} is on node {pod.node}, which is not Ready ({pod.node_reason}): the API's view of its "
            "containers is stale, and its kubelet can neither stop them nor report them"
        )
        confidence = 0.7
    elif pod.state_reason == "OOMKilled":
        what = f"the flow's container {pod.container} of {where} was OOMKilled (exit code {pod.exit_code})"
    elif pod.container_state == "terminated":
        what = (
            f"the flow's container {pod.container} of {where} has exited "
            f"({pod.state_reason}, exit code {pod.exit_code})"
        )
    elif pod.container_state == "waiting":
        what = (
            f"the flow's container {pod.container} of {where} is waiting ({pod.state_reason}) "
            "and runs nothing"
        )
    else:
        what = f"nothing of the run runs in {where} ({pod.phase})"
    others = _other_finalizers(pod)
    tracking = JOB_TRACKING_FINALIZER in pod.finalizers
    if pod.deletion_timestamp and pod.name:
        evidence.append(_terminating(pod))
        if others:
            what += f"; the pod stays Terminating, held by its finalizer(s) {', '.join(others)}"
        elif tracking and _tracking_recent(pod):
            what += (
                f"; the pod is still listed, Terminating, only until the Job controller removes its "
                f"{JOB_TRACKING_FINALIZER} finalizer (it does on its next sync of the pod, within seconds): "
                "no finalizer is stuck"
            )
        elif tracking:
            what += (
                f"; the pod stays Terminating, held by the Job controller's {JOB_TRACKING_FINALIZER} "
                f"finalizer for {seconds_text(_since_deletion(pod))}: the Job controller "
                "(kube-controller-manager) is down or behind"
            )
        if pod.finalizers and pod.job_deleting:
            what += f", and the Foreground deletion of its Job {pod.job} waits for the pod"
    summary = (
        f"The run's infrastructure is gone: {what}; only the API state is stuck in Cancelling "
        "(nothing is left to report Cancelled)."
    )
    fixes = remediation(Cause.INFRASTRUCTURE_GONE, None)
    if others and pod.deletion_timestamp:
        fixes += (
            f"find the controller that owns the finalizer(s) {', '.join(others)} on {where}: "
            "until it removes them the pod object stays Terminating (and a Foreground deletion of its "
            "Job waits for it); "
            f"removing them by hand (`kubectl patch pod -n {pod.namespace} {pod.name} --type=json -p "
            f"{shlex.quote(_remove_finalizers_patch(pod, others))}`) skips that controller's clean-up",
        )
    elif tracking and pod.deletion_timestamp and not _tracking_recent(pod):
        fixes += (
            "check the Job controller (kube-controller-manager: its logs, its leader election): it removes "
            f"{JOB_TRACKING_FINALIZER} from every deleted Job pod within seconds when it runs; removing it "
            "by hand lets the pod go but the Job may then miscount it",
        )
    if pod.state_reason == "OOMKilled" or pod.last_state_reason == "OOMKilled":
        fixes += (
            "raise the job's memory limit (the work pool's job template: resources.limits.memory) "
            "or make the flow use less",
        )
    return Verdict(
        cause=Cause.INFRASTRUCTURE_GONE,
        summary=summary,
        confidence=confidence,
        evidence=tuple(evidence),
        remediation=fixes,
        short_fix=short_fix(Cause.INFRASTRUCTURE_GONE, None),
    )


def _other_finalizers(pod: PodFacts) -> tuple[str, ...]:
    """The pod's finalizers but the Job controller's job-tracking one."""
    return tuple(f for f in pod.finalizers if f != JOB_TRACKING_FINALIZER)


def _since_deletion(pod: PodFacts) -> float | None:
    """Seconds since the pod's deletion was requested (deletionTimestamp is that plus the grace)."""
    if pod.past_grace_seconds is None:
        return None
    return pod.past_grace_seconds + (pod.deletion_grace_period_seconds or 0)


def _tracking_recent(pod: PodFacts) -> bool:
    """Whether a deleted pod still held by the job-tracking finalizer is only waiting for the Job
    controller's next sync (unknown: taken as recent, the usual case)."""
    since = _since_deletion(pod)
    return since is None or since < JOB_TRACKING_PATIENCE


def _remove_finalizers_patch(pod: PodFacts, names: tuple[str, ...]) -> str:
    """A JSON patch removing the finalizers `names` (by index, highest first), each guarded by a test."""
    operations = []
    for index in sorted((i for i, f in enumerate(pod.finalizers) if f in names), reverse=True):
        path = f"/metadata/finalizers/{index}"
        operations += [
            {"op": "test", "path": path, "value": pod.finalizers[index]},
            {"op": "remove", "path": path},
        ]
    return json.dumps(operations, separators=(",", ":"))


def _terminating(pod: PodFacts) -> str:
    grace = pod.deletion_grace_period_seconds
    past = pod.past_grace_seconds
    fact = f"{_where(pod)} is Terminating: deletion requested with a grace period of {seconds_text(grace)}"
    if past is not None and past > 0:
        fact += f", which ended {seconds_text(past)} ago"
    elif past is not None:
        fact += f", which ends in {seconds_text(-past)}"
    others = _other_finalizers(pod)
    if others:
        fact += (
            f"; the finalizer(s) {', '.join(others)} keep the pod object until their controller removes them"
        )
    if JOB_TRACKING_FINALIZER in pod.finalizers:
        since = _since_deletion(pod)
        fact += (
            f"; {JOB_TRACKING_FINALIZER} is the Job controller's own finalizer, which it removes from a "
            "deleted Job pod on its next sync"
            + (
                ""
                if _tracking_recent(pod)
                else f": still there {seconds_text(since)} after the deletion, the Job controller is not "
                "syncing"
            )
        )
    return fact


def pod_facts(pod: PodFacts, cause: Cause, runner_runs: bool = True) -> tuple[str, ...]:
    """Evidence about the run's pod, for any verdict of a Kubernetes run; `runner_runs`: whether a
    Prefect Runner was found in it (the Runner's settings say nothing where none runs)."""
    facts: list[str] = []
    if pod.name:
        facts.append(
            f"{_where(pod)}: phase {pod.phase}, node {pod.node}, container {pod.container} "
            f"{pod.container_state}"
            + (f" ({pod.state_reason})" if pod.state_reason else "")
            + (f", image {pod.image}" if pod.image else "")
        )
    if pod.command and cause not in (Cause.CANCEL_NOT_OBSERVED, Cause.PID1_NO_FORWARD):
        shown = shlex.join(pod.command)[:160]
        if runs_runner(pod.command):
            facts.append(
                f"the container runs `{shown}`: Prefect's Runner, which acts on a cancel inside the pod"
            )
        else:
            facts.append(
                f"the container runs `{shown}`: no `prefect flow-run execute`, so no Prefect Runner "
                "in the pod "
                "watches for the cancel"
            )
    if pod.job_exists is False and pod.name and pod.running:
        facts.append(
            f"Job {pod.namespace}/{pod.job} was deleted but its pod {pod.name} still runs: "
            "deleting a Job with "
            "propagationPolicy Orphan (the API's default for Jobs, `kubectl delete job --cascade=orphan`) "
            "leaves its pods running"
        )
    if pod.deletion_timestamp and cause is not Cause.INFRASTRUCTURE_GONE:
        facts.append(_terminating(pod))
    if pod.job_deleting:
        facts.append(
            f"Job {pod.namespace}/{pod.job} is being deleted (deletionTimestamp set); deleted with "
            "propagationPolicy Foreground, as prefect-kubernetes's teardown does, it stays until its pods "
            "are gone"
        )
    if pod.backoff_limit is not None:
        retry = (
            "a failed pod is not retried"
            if pod.backoff_limit == 0
            else f"the Job controller starts a new pod after a failure, up to {pod.backoff_limit} times: "
            "a killed flow can come back"
        )
        facts.append(f"the Job's backoffLimit is {pod.backoff_limit}: {retry}")
    behaviour = pod.settings.get("PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR")
    if behaviour and runner_runs:
        facts.append(
            f"PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR={behaviour}: on the kubelet's SIGTERM the Runner "
            + ("reschedules the run" if behaviour == "reschedule" else "gives the run up (relinquish)")
            + " instead of cancelling it"
        )
    if pod.attach is PodAttach.NODE:
        facts.append("sampled from the pod's node (node mode: host PIDs found through /proc/*/cgroup)")
    elif pod.attach is PodAttach.EPHEMERAL:
        facts.append(
            f"sampled from the ephemeral container {pod.debug_container}; "
            "it stays in the pod's spec until the "
            "pod is deleted (ephemeral containers cannot be removed)"
        )
    others = [name for name in pod.ephemeral_containers if name != pod.debug_container]
    if others:
        facts.append(f"ephemeral containers left in the pod's spec: {', '.join(others)}")
    for event in pod.events:
        if event.reason in NOTABLE_EVENTS or event.type == "Warning":
            count = f" (x{event.count})" if event.count > 1 else ""
            facts.append(
                f"event {event.last_seen or '?'} {event.type} {event.reason}{count}: {event.message[:200]}"
            )
    return tuple(facts)


def pod_short_fix(cause: Cause) -> str | None:
    """The table's few words where a pod's differ from a process's or a container's."""
    return {Cause.ORPHANED_INFRASTRUCTURE: "delete the Job (kubectl)"}.get(cause)


def pod_stop_commands(pod: PodFacts) -> list[str]:
    """kubectl commands that end the run's pod now (the Job first, so that it starts no other pod)."""
    commands = []
    ns = shlex.quote(pod.namespace)
    if pod.job and pod.job_exists is not False:
        commands.append(
            f"kubectl delete job -n {ns} {shlex.quote(pod.job)} --cascade=background --wait=false"
        )
    if pod.name and pod.running:
        commands.append(f"kubectl delete pod -n {ns} {shlex.quote(pod.name)} --grace-period=0 --force")
    return commands


__all__ = [
    "JOB_TRACKING_FINALIZER",
    "JOB_TRACKING_PATIENCE",
    "NOTABLE_EVENTS",
    "pod_facts",
    "pod_gone",
    "pod_short_fix",
    "pod_stop_commands",
    "runs_runner",
]
