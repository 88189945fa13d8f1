"""The Kubernetes kind: a run in a Job's pod, located through the cluster's API, sampled by host
PID when this host is the pod's node, else from an ephemeral container in the pod."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect_cancel_doctor.core.progress import ProgressFn
from prefect_cancel_doctor.kinds.base import (
    ContainerView,
    Here,
    InfraRef,
    Job,
    Location,
    ProcessesOnly,
    StopNow,
)
from prefect_cancel_doctor.model import Cause, InfraKind, PodAttach, Target, Verdict

if TYPE_CHECKING:
    from prefect_cancel_doctor.clients.prefect_records import FlowRun
    from prefect_cancel_doctor.kinds.kubernetes.locate import KubeSession


class KubernetesKind(ProcessesOnly):
    """``"<namespace>:<job name>"`` (before prefect-kubernetes 3.4.1 ``"<cluster uid>:<ns>:<job>"``)."""

    infra = InfraKind.KUBERNETES
    #: Each run costs two API reads (its Job, its pod's events; the pods of all the runs' Jobs and the
    #: nodes are read once a scan): located together, with one client made beforehand.
    concurrent = True

    def parse(self, value: str) -> InfraRef | None:
        parts = value.split(":")
        if len(parts) in (2, 3) and all(parts):
            return InfraRef(InfraKind.KUBERNETES, value, namespace=parts[-2], job=parts[-1])
        return None

    def describe(self, ref: InfraRef, started: bool) -> str:
        return f"Kubernetes job {ref.namespace}/{ref.job}"

    def prepare(self, runs: list[FlowRun], here: Here) -> set[str]:
        scan_session = session(here)  # made before the runs are located on several threads
        jobs = set()
        for run in runs:
            ref = self.parse(run.infrastructure_pid or "")
            if ref is not None and ref.namespace and ref.job:
                jobs.add((ref.namespace, ref.job))
        if len(jobs) > 1:
            scan_session.read_pods(jobs)
        return set()

    def may_still_run(self, run: FlowRun, here: Here) -> bool:
        return True

    def locate(self, run: FlowRun, ref: InfraRef, here: Here) -> Location:
        from prefect_cancel_doctor.clients.kube_api import KubeError
        from prefect_cancel_doctor.clients.kube_config import KubeConfigError
        from prefect_cancel_doctor.kinds.kubernetes.locate import locate_job

        scan_session = session(here)
        try:
            client = scan_session.client()
        except (KubeError, KubeConfigError) as exc:  # this run is not diagnosable here; the others are
            why = f"the run is Kubernetes job {ref.namespace}/{ref.job}: {exc}" + (
                f"; {exc.hint}" if exc.hint else ""
            )
            return Location(ref.kind, ref.raw or "?", unreachable=why)
        return locate_job(
            run.id,
            ref,
            client,
            proc_root=here.options.proc_root,
            cgroups=scan_session.cgroups,
            debug_image=here.options.kube_debug_image,
            session=scan_session,
        )

    def still_there(self, location: Location) -> bool:
        return bool(location.pids) or bool(location.pod and location.pod.running)

    def samples_apart(self, location: Location) -> bool:
        return location.pod is not None and location.pod.attach == PodAttach.EPHEMERAL

    def sample(self, jobs: list[Job], here: Here, progress: ProgressFn) -> None:
        """Ephemeral containers, every pod's at once, with the client that located them."""
        from prefect_cancel_doctor.kinds.kubernetes.pod import sample_pod_jobs

        options = here.options
        outcomes = sample_pod_jobs(
            session(here),
            [(job.location, job.run.id if job.run else None) for job in jobs],
            image=options.kube_debug_image or "",
            samples=options.samples,
            interval=options.interval,
            native=options.native,
            locals=options.locals,
            timeout=max(options.timeout, 60.0),
            progress=progress,
        )
        for job, (location, sampled) in zip(jobs, outcomes, strict=True):
            job.location = location
            if sampled is not None:
                job.samples.extend(sampled.processes)
                job.runner = sampled.runner
                job.notes.extend(sampled.notes)

    def gone(self, target: Target, notes: tuple[str, ...]) -> Verdict | None:
        from prefect_cancel_doctor.kinds.kubernetes.facts import pod_gone

        return pod_gone(target.pod, notes) if target.pod is not None else None

    def facts(self, target: Target, cause: Cause, runner_runs: bool) -> tuple[str, ...]:
        from prefect_cancel_doctor.kinds.kubernetes.facts import pod_facts

        return pod_facts(target.pod, cause, runner_runs=runner_runs) if target.pod is not None else ()

    def in_container(self, target: Target) -> ContainerView | None:
        pod = target.pod
        if pod is None:
            return None
        name = f"container {pod.container} of pod {pod.name}"
        return ContainerView(name, pod.command, (), False, "the kubelet's SIGTERM (pod deletion)")

    def short_fix(self, target: Target, cause: Cause) -> str | None:
        from prefect_cancel_doctor.kinds.kubernetes.facts import pod_short_fix

        return pod_short_fix(cause)

    def stop_now(self, target: Target, cause: Cause) -> StopNow | None:
        from prefect_cancel_doctor.kinds.kubernetes.facts import pod_stop_commands

        pod = target.pod
        if pod is None:
            return None
        commands = tuple(pod_stop_commands(pod))
        if not commands:
            return StopNow((), "nothing was left to stop")
        return StopNow(commands, f"its Job and pod {pod.namespace}/{pod.name or pod.job} deleted")


def session(here: Here) -> KubeSession:
    """The scan's Kubernetes client and cgroup index, one a scan (an exec credential plugin runs once),
    made on first use."""
    from prefect_cancel_doctor.kinds.kubernetes.locate import KubeSession

    options = here.options
    return here.shared(
        "kubernetes.session", lambda: KubeSession(options.kubeconfig, options.kube_context, options.proc_root)
    )
