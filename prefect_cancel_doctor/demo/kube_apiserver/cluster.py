"""The cluster model: namespaces, Jobs, pods, the node and events, as the API server stores them and
its controllers act on them.

`FakeCluster` holds the objects; the HTTP front (`server`) calls into it under its `lock`. It does the
Job controller's part (a Job's pod, its labels, ownerReference and job-tracking finalizer, the Job's
status counted from its pods), deletion (propagation policies, grace periods, SIGTERM then SIGKILL,
objects Terminating while finalizers remain, then reaped), eviction and the node's Ready condition.
The containers themselves are the `containers.Kubelet`'s; what a PATCH may change is `admission`'s.

Imports `status`, `patches`, `admission` and `containers` of the fixture, nothing above.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from prefect_cancel_doctor.clients.docker_api import ContainerNotFound, DockerClient, DockerError
from prefect_cancel_doctor.demo.kube_apiserver.admission import (
    admit_ephemeral,
    container_defaults,
    validate_ephemeral,
    validate_pod_update,
)
from prefect_cancel_doctor.demo.kube_apiserver.containers import FIXTURE_LABEL, Kubelet, Pod
from prefect_cancel_doctor.demo.kube_apiserver.patches import MERGE, STRATEGIC, apply_patch
from prefect_cancel_doctor.demo.kube_apiserver.status import ApiStatus, not_found

#: The one node.
NODE_NAME = "pcd-node-1"
#: The Kubernetes version /version reports.
VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0-pcd-fixture", "platform": "linux/amd64"}
#: The finalizer the Job controller puts on each pod of a Job (Kubernetes 1.26+), and removes once it
#: has counted the pod.
JOB_TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"


def now_iso(at: float | None = None) -> str:
    """RFC 3339 UTC to the second, as the API server writes timestamps."""
    moment = dt.datetime.fromtimestamp(time.time() if at is None else at, dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeCluster:
    """The objects and the Docker containers behind them; the HTTP handler calls into it under `lock`."""

    def __init__(
        self,
        docker: DockerClient,
        *,
        images: Mapping[str, str],
        host_mounts: Iterable[str] = (),
        owner: str = "",
        ephemeral_containers: bool = True,
        extra_labels: Mapping[str, str] | None = None,
    ) -> None:
        #: The node: runs each container of a pod as a Docker container, reports their states and logs.
        self.kubelet = Kubelet(
            docker,
            images=images,
            host_mounts=host_mounts,
            owner=owner or f"{uuid.uuid4().hex[:8]}",
            extra_labels=extra_labels or {},
            record_event=self.record_event,
        )
        self.ephemeral_containers = ephemeral_containers
        self.lock = threading.RLock()
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], Pod] = {}
        self.events: list[dict[str, Any]] = []
        self.node_ready: tuple[str, str, str] = ("True", "KubeletReady", "kubelet is posting ready status")
        #: Whether the Job controller runs: it removes a pod's job-tracking finalizer once the pod is
        #: finished, being deleted, or no Job's any more (False: it is down or far behind).
        self.job_controller = True
        self._version = 1000
        self._timers: list[threading.Timer] = []
        #: The kubelet's starts of ephemeral containers, under way or done.
        self._starting: list[threading.Thread] = []
        self.ensure_namespace("default")
        # Its uid is the cluster's (what prefect-kubernetes before 3.4.1 recorded as the cluster uid).
        self.ensure_namespace("kube-system")

    @property
    def uid(self) -> str:
        """The cluster uid: the ``kube-system`` namespace's uid."""
        return str(self.namespaces["kube-system"]["metadata"]["uid"])

    @property
    def docker(self) -> DockerClient:
        """The Docker engine the pods' containers run on."""
        return self.kubelet.docker

    @property
    def owner(self) -> str:
        """The value of `FIXTURE_LABEL` on every container this cluster starts."""
        return self.kubelet.owner

    @property
    def images(self) -> dict[str, str]:
        """Image names in pod specs → the Docker images that stand for them."""
        return self.kubelet.images

    @property
    def host_mounts(self) -> list[str]:
        """Binds every container gets."""
        return self.kubelet.host_mounts

    @property
    def extra_labels(self) -> dict[str, str]:
        """Labels every container gets."""
        return self.kubelet.extra_labels

    # -- bookkeeping ---------------------------------------------------------------------

    def next_version(self) -> str:
        """A new resourceVersion."""
        self._version += 1
        return str(self._version)

    def _meta(
        self, namespace: str | None, name: str, labels: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "uid": str(uuid.uuid4()),
            "resourceVersion": self.next_version(),
            "creationTimestamp": now_iso(),
        }
        if namespace is not None:
            meta["namespace"] = namespace
        if labels:
            meta["labels"] = dict(labels)
        return meta

    def ensure_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Create (or relabel) a namespace."""
        with self.lock:
            namespace = self.namespaces.get(name)
            if namespace is None:
                namespace = {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": self._meta(None, name, {"kubernetes.io/metadata.name": name}),
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                }
                self.namespaces[name] = namespace
            if labels:
                namespace["metadata"].setdefault("labels", {}).update(labels)
            return namespace

    def record_event(
        self,
        kind: str,
        namespace: str,
        name: str,
        uid: str,
        reason: str,
        message: str,
        type_: str = "Normal",
        component: str = "kubelet",
    ) -> None:
        """An Event about an object, as a controller or the kubelet records it."""
        stamp = now_iso()
        with self.lock:  # the kubelet's workers record too
            self.events.append(
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": self._meta(namespace, f"{name}.{secrets.token_hex(8)}"),
                    "involvedObject": {
                        "kind": kind,
                        "namespace": namespace,
                        "name": name,
                        "uid": uid,
                        "apiVersion": "v1" if kind == "Pod" else "batch/v1",
                    },
                    "reason": reason,
                    "message": message,
                    "type": type_,
                    "count": 1,
                    "firstTimestamp": stamp,
                    "lastTimestamp": stamp,
                    "source": {"component": component, "host": NODE_NAME}
                    if component == "kubelet"
                    else {"component": component},
                    "reportingComponent": component,
                    "reportingInstance": NODE_NAME if component == "kubelet" else "",
                }
            )

    # -- jobs -------------------------------------------------------------------------------

    def create_job(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a Job: store it, then create and start its pod (the Job controller's part)."""
        with self.lock:
            if namespace not in self.namespaces:
                raise not_found("namespaces", namespace)
            job = copy.deepcopy(dict(body))
            meta = job.setdefault("metadata", {})
            name = meta.get("name") or (meta.get("generateName", "job-") + secrets.token_hex(3)[:5])
            if (namespace, name) in self.jobs:
                raise ApiStatus(
                    409,
                    "AlreadyExists",
                    f'jobs.batch "{name}" already exists',
                    {"name": name, "group": "batch", "kind": "jobs"},
                )
            job["apiVersion"], job["kind"] = "batch/v1", "Job"
            fresh = self._meta(namespace, name, meta.get("labels"))
            job["metadata"] = {**meta, **fresh, "labels": meta.get("labels") or {}}
            job["metadata"].pop("generateName", None)
            spec = job.setdefault("spec", {})
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completions", 1)
            spec.setdefault("parallelism", 1)
            uid = job["metadata"]["uid"]
            selector = {"batch.kubernetes.io/controller-uid": uid}
            spec["selector"] = {"matchLabels": selector}
            template = spec.setdefault("template", {})
            template_meta = template.setdefault("metadata", {})
            template_meta["labels"] = {
                **(template_meta.get("labels") or {}),
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": uid,
                "job-name": name,
            }
            job["status"] = {"startTime": now_iso()}
            self.jobs[(namespace, name)] = job
            finalizers = [f for f in template_meta.get("finalizers") or [] if f != JOB_TRACKING_FINALIZER]
            pod_body = {
                "metadata": {
                    **copy.deepcopy(template_meta),
                    # The Job controller adds its own finalizer to the template's (Kubernetes 1.26+).
                    "finalizers": [*finalizers, JOB_TRACKING_FINALIZER],
                    "generateName": f"{name}-",
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": name,
                            "uid": uid,
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": copy.deepcopy(template.get("spec") or {}),
            }
            pod = self.create_pod(namespace, pod_body)
            self.record_event(
                "Job",
                namespace,
                name,
                uid,
                "SuccessfulCreate",
                f"Created pod: {pod['metadata']['name']}",
                component="job-controller",
            )
            return self.job_view(job)

    def job_view(self, job: dict[str, Any]) -> dict[str, Any]:
        """The Job with its status counted from its pods now."""
        view = copy.deepcopy(job)
        uid = job["metadata"]["uid"]
        active = succeeded = failed = 0
        for key, pod in self.pods.items():
            owners = pod.document["metadata"].get("ownerReferences") or []
            if not any(o.get("uid") == uid for o in owners) or key[0] != job["metadata"]["namespace"]:
                continue
            phase = self.pod_view(pod)["status"]["phase"]
            if phase in ("Pending", "Running") and pod.deleted_at is None:
                active += 1
            elif phase == "Succeeded":
                succeeded += 1
            elif phase == "Failed":
                failed += 1
        status = view.setdefault("status", {})
        for name, count in (("active", active), ("succeeded", succeeded), ("failed", failed)):
            if count:
                status[name] = count
        status["ready"] = active
        if succeeded:
            status["conditions"] = [{"type": "Complete", "status": "True", "lastTransitionTime": now_iso()}]
            status["completionTime"] = now_iso()
        elif failed > view["spec"].get("backoffLimit", 6):
            status["conditions"] = [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                    "lastTransitionTime": now_iso(),
                }
            ]
        return view

    def delete_job(self, namespace: str, name: str, propagation: str | None) -> dict[str, Any]:
        """DELETE a Job: Orphan (the API's default for Jobs) keeps the pods; Background deletes
        the Job now and its pods after; Foreground keeps the Job, Terminating with the
        ``foregroundDeletion`` finalizer, until its pods are gone. The pods are deleted with
        their own grace period (a grace period given to the Job's deletion is not passed on)."""
        with self.lock:
            job = self.jobs.get((namespace, name))
            if job is None:
                raise not_found("jobs", name, "batch")
            uid = job["metadata"]["uid"]
            policy = propagation or "Orphan"
            if policy == "Foreground":
                meta = job["metadata"]
                if "deletionTimestamp" not in meta:
                    meta["deletionTimestamp"] = now_iso()
                    meta["deletionGracePeriodSeconds"] = 0
                    meta["finalizers"] = [*meta.get("finalizers", []), "foregroundDeletion"]
                    meta["resourceVersion"] = self.next_version()
            else:
                del self.jobs[(namespace, name)]
            for (pod_ns, pod_name), pod in list(self.pods.items()):
                owners = pod.document["metadata"].get("ownerReferences") or []
                if pod_ns != namespace or not any(o.get("uid") == uid for o in owners):
                    continue
                if policy == "Orphan":
                    pod.document["metadata"]["ownerReferences"] = [o for o in owners if o.get("uid") != uid]
                    if not pod.document["metadata"]["ownerReferences"]:
                        del pod.document["metadata"]["ownerReferences"]
                    pod.document["metadata"]["resourceVersion"] = self.next_version()
                else:
                    self.delete_pod(pod_ns, pod_name, None)
            self._reap_jobs()
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "group": "batch", "kind": "jobs", "uid": uid},
            }

    # -- pods -------------------------------------------------------------------------------

    def create_pod(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store a pod, bind it to the node and start its containers."""
        with self.lock:
            if namespace not in self.namespaces:
                raise not_found("namespaces", namespace)
            document = copy.deepcopy(dict(body))
            meta = document.setdefault("metadata", {})
            name = meta.get("name") or meta.get("generateName", "pod-") + secrets.token_hex(3)[:5]
            if (namespace, name) in self.pods:
                raise ApiStatus(
                    409, "AlreadyExists", f'pods "{name}" already exists', {"name": name, "kind": "pods"}
                )
            fresh = self._meta(namespace, name, meta.get("labels"))
            document["metadata"] = {**meta, **fresh, "labels": meta.get("labels") or {}}
            document["metadata"].pop("generateName", None)
            document["apiVersion"], document["kind"] = "v1", "Pod"
            spec = document.setdefault("spec", {})
            spec["nodeName"] = NODE_NAME
            spec.setdefault("restartPolicy", "Never")
            spec.setdefault("terminationGracePeriodSeconds", 30)
            spec.setdefault("dnsPolicy", "ClusterFirst")
            spec.setdefault("schedulerName", "default-scheduler")
            spec.setdefault("securityContext", {})
            for container in spec.get("containers") or []:
                container_defaults(container)
            pod = Pod(document)
            self.pods[(namespace, name)] = pod
            uid = document["metadata"]["uid"]
            self.record_event(
                "Pod",
                namespace,
                name,
                uid,
                "Scheduled",
                f"Successfully assigned {namespace}/{name} to {NODE_NAME}",
                component="default-scheduler",
            )
            if spec.get("shareProcessNamespace"):
                self.kubelet.start_sandbox(pod)
            for container in spec.get("containers") or []:
                self.kubelet.start_container(pod, container, target=None)
            document["status"] = {"startTime": now_iso()}
            return self.pod_view(pod)

    def pod_view(self, pod: Pod) -> dict[str, Any]:
        """The pod with its status read from the Docker engine now."""
        view = copy.deepcopy(pod.document)
        phase = self.kubelet.report_status(pod, view)
        if self._job_controller_sync(pod, phase):
            view["metadata"] = copy.deepcopy(pod.document["metadata"])
        return view

    def get_pod(self, namespace: str, name: str) -> Pod:
        """The stored pod, or a 404 Status."""
        pod = self.pods.get((namespace, name))
        if pod is None:
            raise not_found("pods", name)
        return pod

    def patch_pod(
        self,
        namespace: str,
        name: str,
        patch: Any,
        strategic: bool = False,
        *,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """PATCH a pod's metadata (labels, annotations, finalizers); spec changes are refused.

        `content_type` (the request's) chooses the kind of patch: JSON patch, strategic merge, or
        JSON merge; without it `strategic` does."""
        kind = content_type or (STRATEGIC if strategic else MERGE)
        with self.lock:
            pod = self.get_pod(namespace, name)
            before = copy.deepcopy(pod.document)
            merged = apply_patch(pod.document, patch, kind)
            merged = validate_pod_update(name, before, merged)
            merged["metadata"]["resourceVersion"] = self.next_version()
            pod.document = merged
            self._reap(namespace, name)
            return self.pod_view(pod) if (namespace, name) in self.pods else merged

    def patch_ephemeral(
        self,
        namespace: str,
        name: str,
        patch: Any,
        strategic: bool,
        user: str,
        dry_run: bool = False,
        *,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """PATCH pods/ephemeralcontainers: validate as the API server does, admit, start the new ones
        (as a kubelet: never in a pod that is Terminating or finished)."""
        kind = content_type or (STRATEGIC if strategic else MERGE)
        with self.lock:
            pod = self.get_pod(namespace, name)
            spec = pod.document["spec"]
            before = [copy.deepcopy(c) for c in spec.get("ephemeralContainers") or []]
            if "json-patch" in kind:
                # A JSON patch addresses the whole pod (``/spec/ephemeralContainers/-``).
                whole = copy.deepcopy(pod.document)
                whole["spec"]["ephemeralContainers"] = before
                merged = apply_patch(whole, patch, kind)
            else:
                merged = apply_patch({"spec": {"ephemeralContainers": before}}, patch, kind)
            merged_spec = merged.get("spec") if isinstance(merged, dict) else None
            after = (merged_spec if isinstance(merged_spec, dict) else {}).get("ephemeralContainers") or []
            added = validate_ephemeral(name, spec, before, after)
            level = (self.namespaces[namespace]["metadata"].get("labels") or {}).get(
                "pod-security.kubernetes.io/enforce"
            )
            admit_ephemeral(name, level, added)
            for container in added:
                container_defaults(container, ephemeral=True)
            if dry_run:  # dryRun=All: validated and admitted, nothing stored or started
                view = self.pod_view(pod)
                view["spec"]["ephemeralContainers"] = after
                return view
            spec["ephemeralContainers"] = after
            pod.document["metadata"]["resourceVersion"] = self.next_version()
            # The kubelet runs only a Terminating pod's termination (and nothing of a finished pod):
            # an ephemeral container added now is in the spec but never starts.
            never = pod.deleted_at is not None or pod.evicted is not None or self.kubelet.finished(pod)
            for container in added:
                if never:
                    pod.waiting[str(container.get("name"))] = ("ContainerCreating", "")
                    continue
                # As a kubelet: the API answers at once, the container starts after (its status is
                # waiting, ContainerCreating, until then), each pod's on its own worker.
                target = container.get("targetContainerName")
                starting = threading.Thread(
                    target=self._start_ephemeral,
                    args=(pod, container, pod.docker_ids.get(target) if target else None),
                    name=f"pcd-kubelet-{name}",
                    daemon=True,
                )
                self._starting.append(starting)
                starting.start()
            return self.pod_view(pod)

    def _start_ephemeral(self, pod: Pod, container: Mapping[str, Any], target: str | None) -> None:
        if pod.deleted_at is not None:  # Terminating meanwhile: the kubelet never starts it
            pod.waiting[str(container.get("name"))] = ("ContainerCreating", "")
            return
        self.kubelet.start_container(pod, container, target=target)

    def delete_pod(self, namespace: str, name: str, grace: int | None) -> dict[str, Any]:
        """DELETE a pod gracefully: Terminating now, SIGTERM, SIGKILL after the grace; gone once its
        containers stopped and no finalizer remains."""
        with self.lock:
            pod = self.get_pod(namespace, name)
            meta = pod.document["metadata"]
            if pod.deleted_at is not None:
                return self.pod_view(pod)
            if grace is None:
                grace = int(pod.document["spec"].get("terminationGracePeriodSeconds", 30))
            pod.deleted_at = time.time()
            meta["deletionTimestamp"] = now_iso(pod.deleted_at + grace)
            meta["deletionGracePeriodSeconds"] = grace
            meta["resourceVersion"] = self.next_version()
            for cname, docker_id in list(pod.docker_ids.items()):
                self.record_event(
                    "Pod", namespace, name, meta["uid"], "Killing", f"Stopping container {cname}"
                )
                with contextlib.suppress(DockerError):
                    self.docker.kill(docker_id, "SIGKILL" if grace == 0 else "SIGTERM")
            timer = threading.Timer(max(grace, 0), self._after_grace, (namespace, name, meta["uid"]))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
            view = self.pod_view(pod)
            self._reap(namespace, name)
            return view

    def _after_grace(self, namespace: str, name: str, uid: str) -> None:
        with self.lock:
            pod = self.pods.get((namespace, name))
            if pod is None or pod.document["metadata"]["uid"] != uid:
                return
            for docker_id in pod.docker_ids.values():
                with contextlib.suppress(DockerError):
                    if self.docker.inspect(docker_id).running:
                        self.docker.kill(docker_id, "SIGKILL")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with self.lock:
                if self._reap(namespace, name):
                    return
            time.sleep(0.2)

    def _reap(self, namespace: str, name: str) -> bool:
        """Remove a Terminating pod whose containers stopped and which holds no finalizer."""
        pod = self.pods.get((namespace, name))
        if pod is None:
            return True
        self._job_controller_sync(pod, None)
        if pod.deleted_at is None or pod.document["metadata"].get("finalizers"):
            return False
        for docker_id in pod.docker_ids.values():
            with contextlib.suppress(ContainerNotFound):
                if self.docker.inspect(docker_id).running:
                    return False
        for docker_id in [*pod.docker_ids.values(), *([pod.sandbox_id] if pod.sandbox_id else [])]:
            with contextlib.suppress(DockerError):
                self.docker.remove(docker_id)
        del self.pods[(namespace, name)]
        self._reap_jobs()
        return True

    def _reap_jobs(self) -> None:
        """Remove Jobs deleted in the foreground once none of their pods is left."""
        for key, job in list(self.jobs.items()):
            if "foregroundDeletion" not in (job["metadata"].get("finalizers") or []):
                continue
            uid = job["metadata"]["uid"]
            if not any(
                any(o.get("uid") == uid for o in p.document["metadata"].get("ownerReferences") or [])
                for p in self.pods.values()
            ):
                del self.jobs[key]

    def _job_controller_sync(self, pod: Pod, phase: str | None) -> bool:
        """The Job controller's part for one pod: remove its job-tracking finalizer once the pod is
        finished (`phase` Succeeded/Failed), being deleted, or no Job's (an orphan); True if removed.

        As in Kubernetes (``job_controller.go``: a pod with the finalizer and a deletionTimestamp
        counts as failed at once, its finalizer goes in the same sync), a deleted pod loses it
        before its containers have stopped. A pod that becomes removable this way is reaped soon
        after, as the garbage collector would."""
        meta = pod.document["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if JOB_TRACKING_FINALIZER not in finalizers or not self.job_controller:
            return False
        owners = {o.get("uid") for o in meta.get("ownerReferences") or [] if o.get("kind") == "Job"}
        owned = any(job["metadata"]["uid"] in owners for job in self.jobs.values())
        if owned and pod.deleted_at is None and phase not in ("Succeeded", "Failed"):
            return False
        rest = [f for f in finalizers if f != JOB_TRACKING_FINALIZER]
        if rest:
            meta["finalizers"] = rest
        else:
            meta.pop("finalizers", None)
        meta["resourceVersion"] = self.next_version()
        if pod.deleted_at is not None and not rest:
            timer = threading.Timer(0.0, self._reap_later, (meta["namespace"], meta["name"], meta["uid"]))
            timer.daemon = True
            self._timers.append(timer)
            timer.start()
        return True

    def _reap_later(self, namespace: str, name: str, uid: str) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with self.lock:
                pod = self.pods.get((namespace, name))
                if pod is None or pod.document["metadata"]["uid"] != uid or self._reap(namespace, name):
                    return
            time.sleep(0.2)

    def evict(
        self, namespace: str, name: str, message: str = "The node was low on resource: memory."
    ) -> None:
        """What the kubelet does under node pressure: kill the containers, phase Failed, reason Evicted."""
        with self.lock:
            pod = self.get_pod(namespace, name)
            pod.evicted = message
            for docker_id in [*pod.docker_ids.values(), *([pod.sandbox_id] if pod.sandbox_id else [])]:
                with contextlib.suppress(DockerError):
                    self.docker.kill(docker_id, "SIGKILL")
            meta = pod.document["metadata"]
            self.record_event("Pod", namespace, name, meta["uid"], "Evicted", message, "Warning")

    def set_node_ready(
        self,
        status: str,
        reason: str = "NodeStatusUnknown",
        message: str = "Kubelet stopped posting node status.",
    ) -> None:
        """Flip the node's Ready condition (True, False, Unknown)."""
        with self.lock:
            self.node_ready = (
                status,
                reason if status != "True" else "KubeletReady",
                message if status != "True" else "kubelet is posting ready status",
            )

    def node(self) -> dict[str, Any]:
        """The one node."""
        status, reason, message = self.node_ready
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "uid": "00000000-0000-0000-0000-000000000001",
                "labels": {"kubernetes.io/hostname": NODE_NAME},
                "resourceVersion": str(self._version),
                "creationTimestamp": now_iso(0),
            },
            "spec": {},
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": status,
                        "reason": reason,
                        "message": message,
                        "lastTransitionTime": now_iso(),
                    }
                ],
                "nodeInfo": {
                    "containerRuntimeVersion": "docker://20.10",
                    "kubeletVersion": VERSION["gitVersion"],
                },
            },
        }

    def logs(self, namespace: str, name: str, params: Mapping[str, str]) -> bytes:
        """pods/log: the container's Docker log (stdout and stderr merged in time order)."""
        return self.kubelet.logs(self.get_pod(namespace, name), params)

    def remove_all(self) -> None:
        """Delete every container this cluster started (pods, ephemeral containers) and forget them."""
        for timer in self._timers:
            timer.cancel()
        for starting in self._starting:
            starting.join(timeout=60)
        with self.lock:
            for pod in self.pods.values():
                for docker_id in [*pod.docker_ids.values(), *([pod.sandbox_id] if pod.sandbox_id else [])]:
                    with contextlib.suppress(DockerError):
                        self.docker.remove(docker_id)
            self.pods.clear()
            self.jobs.clear()
        with contextlib.suppress(DockerError):
            for summary in self.docker.containers(filters={"label": [f"{FIXTURE_LABEL}={self.owner}"]}):
                with contextlib.suppress(DockerError):
                    self.docker.remove(summary.id)
