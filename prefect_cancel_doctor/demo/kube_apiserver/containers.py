"""The node's kubelet and container runtime: every container of a pod is a Docker container.

`Kubelet` starts a pod's containers (and, with ``shareProcessNamespace``, its "pause" sandbox first),
reads their states back from the Docker engine (a pod's status and phase are read on every request)
and serves their logs. It knows nothing of Jobs, finalizers or deletion: the cluster model
(`cluster.FakeCluster`) owns the pods, tells it what to run, and stops containers itself; the
kubelet records its events through the callback it is given.

Imports only `status` of the fixture (and the Docker client).
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prefect_cancel_doctor.clients.docker_api import ContainerNotFound, DockerClient, DockerError, demux_logs
from prefect_cancel_doctor.demo.kube_apiserver.status import ApiStatus

#: Label on every Docker container the server starts (value: the server's owner tag).
FIXTURE_LABEL = "io.prefect-cancel-doctor.kube-fixture"

#: What the sandbox container of a pod with shareProcessNamespace runs: PID 1 of the pod, reaping
#: orphans and exiting on SIGTERM, as /pause does.
PAUSE_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"


@dataclass
class Pod:
    """A stored pod: its API document and what the node keeps about it."""

    document: dict[str, Any]
    #: container name → Docker container id (ephemeral containers included).
    docker_ids: dict[str, str] = field(default_factory=dict)
    #: container name → why it has no container ("ErrImagePull", …).
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Evicted by the kubelet: phase Failed, reason Evicted (kept).
    evicted: str | None = None
    deleted_at: float | None = None
    #: The pod sandbox's "pause" container (shareProcessNamespace only): PID 1 of the pod's one PID
    #: namespace, which every container (ephemeral ones too) joins; stopped after them.
    sandbox_id: str | None = None


class RecordEvent(Protocol):
    """How the kubelet records an Event (`FakeCluster.record_event`)."""

    def __call__(
        self,
        kind: str,
        namespace: str,
        name: str,
        uid: str,
        reason: str,
        message: str,
        type_: str = "Normal",
        component: str = "kubelet",
    ) -> None: ...


class Kubelet:
    """Runs the pods' containers on the Docker engine and reports their status and logs.

    Each "image" is a Docker image the caller maps (`images`); every container also gets the read-only
    host mounts the caller passes, the host's network, and the labels `FIXTURE_LABEL` (value: `owner`)
    and `extra_labels`.
    """

    def __init__(
        self,
        docker: DockerClient,
        *,
        images: Mapping[str, str],
        host_mounts: Iterable[str],
        owner: str,
        extra_labels: Mapping[str, str],
        record_event: RecordEvent,
    ) -> None:
        self.docker = docker
        self.images = dict(images)
        self.host_mounts = list(host_mounts)
        self.owner = owner
        self.extra_labels = dict(extra_labels)
        self.record_event = record_event

    def start_sandbox(self, pod: Pod) -> None:
        """shareProcessNamespace: a "pause" container whose PID namespace every container joins (its
        PID 1), run from the first container's image (``/bin/sh`` and ``sleep`` in it)."""
        meta = pod.document["metadata"]
        containers = pod.document["spec"].get("containers") or [{}]
        image = str(containers[0].get("image") or "")
        docker_image = self.images.get(image) or self.images.get(image.split("@")[0])
        if docker_image is None:
            return
        config: dict[str, Any] = {
            "Image": docker_image,
            "Entrypoint": ["/bin/sh", "-c", PAUSE_SCRIPT],
            "Cmd": [],
            "Labels": {
                FIXTURE_LABEL: self.owner,
                "io.kubernetes.pod.name": meta["name"],
                "io.kubernetes.pod.namespace": meta["namespace"],
                "io.kubernetes.container.name": "POD",
                **self.extra_labels,
            },
            "HostConfig": {
                "NetworkMode": "host",
                "Binds": list(self.host_mounts),
                "AutoRemove": False,
                "RestartPolicy": {"Name": "no"},
            },
        }
        try:
            sandbox = self.docker.create(
                config, name=f"k8s_POD_{meta['name']}_{meta['namespace']}_{meta['uid']}_0"
            )
            self.docker.start(sandbox)
        except DockerError as exc:
            self.record_event(
                "Pod", meta["namespace"], meta["name"], meta["uid"], "FailedCreatePodSandBox",
                f"Failed to create pod sandbox: {exc}", "Warning",
            )  # fmt: skip
            return
        pod.sandbox_id = sandbox

    def start_container(self, pod: Pod, container: Mapping[str, Any], target: str | None) -> None:
        """Create and start one container of `pod` (in the sandbox's PID namespace, or else in `target`'s,
        a Docker id, for an ephemeral container); an unmapped image leaves it waiting in ErrImagePull."""
        meta = pod.document["metadata"]
        name = str(container.get("name") or "")
        image = str(container.get("image") or "")
        docker_image = self.images.get(image) or self.images.get(image.split("@")[0])
        if docker_image is None:
            pod.waiting[name] = (
                "ErrImagePull",
                f'failed to pull and unpack image "{image}": the fixture maps no such image',
            )
            self.record_event(
                "Pod",
                meta["namespace"],
                meta["name"],
                meta["uid"],
                "Failed",
                f'Failed to pull image "{image}": not mapped by the fixture',
                "Warning",
            )
            return
        spec = pod.document["spec"]
        volumes = {v.get("name"): v for v in spec.get("volumes") or [] if isinstance(v, dict)}
        binds = list(self.host_mounts)
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount.get("name")) or {}
            host = (volume.get("hostPath") or {}).get("path")
            if host:
                binds.append(f"{host}:{mount['mountPath']}" + (":ro" if mount.get("readOnly") else ""))
        env = [
            f"{e['name']}={e.get('value', '')}"
            for e in container.get("env") or []
            if isinstance(e, dict) and "name" in e
        ]
        host_config: dict[str, Any] = {
            "NetworkMode": "host",
            "Binds": binds,
            "AutoRemove": False,
            "RestartPolicy": {"Name": "no"},
        }
        limits = (container.get("resources") or {}).get("limits") or {}
        if "memory" in limits:
            host_config["Memory"] = parse_quantity(str(limits["memory"]))
            host_config["MemorySwap"] = host_config["Memory"]
        capabilities = ((container.get("securityContext") or {}).get("capabilities") or {}).get("add") or []
        if capabilities:
            host_config["CapAdd"] = [str(c) for c in capabilities]
        if pod.sandbox_id is not None:  # one PID namespace for the pod: the sandbox's
            host_config["PidMode"] = f"container:{pod.sandbox_id}"
        elif target is not None:
            host_config["PidMode"] = f"container:{target}"
        config: dict[str, Any] = {
            "Image": docker_image,
            "Env": env,
            "Labels": {
                FIXTURE_LABEL: self.owner,
                "io.kubernetes.pod.name": meta["name"],
                "io.kubernetes.pod.namespace": meta["namespace"],
                "io.kubernetes.container.name": name,
                **self.extra_labels,
            },
            "HostConfig": host_config,
            "Tty": bool(container.get("tty")),
            "OpenStdin": bool(container.get("stdin")),
            "StopSignal": "SIGTERM",
        }
        if container.get("command"):
            config["Entrypoint"] = [str(a) for a in container["command"]]
            config["Cmd"] = [str(a) for a in container.get("args") or []]
        elif container.get("args"):
            config["Cmd"] = [str(a) for a in container["args"]]
        if container.get("workingDir"):
            config["WorkingDir"] = str(container["workingDir"])
        docker_name = f"k8s_{name}_{meta['name']}_{meta['namespace']}_{meta['uid']}_0"
        try:
            docker_id = self.docker.create(config, name=docker_name)
            pod.docker_ids[name] = docker_id
            self.docker.start(docker_id)
        except DockerError as exc:
            pod.waiting[name] = ("CreateContainerError", str(exc))
            self.record_event(
                "Pod", meta["namespace"], meta["name"], meta["uid"], "Failed", f"Error: {exc}", "Warning"
            )
            return
        self.record_event(
            "Pod", meta["namespace"], meta["name"], meta["uid"], "Created", f"Created container {name}"
        )
        self.record_event(
            "Pod", meta["namespace"], meta["name"], meta["uid"], "Started", f"Started container {name}"
        )

    def container_status(self, pod: Pod, container: Mapping[str, Any]) -> dict[str, Any]:
        """A ``containerStatuses`` entry, its state read from the Docker engine now."""
        name = str(container.get("name") or "")
        status: dict[str, Any] = {
            "name": name,
            "image": container.get("image"),
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "started": False,
        }
        if name in pod.waiting:
            reason, message = pod.waiting[name]
            status["state"] = {"waiting": {"reason": reason} | ({"message": message} if message else {})}
            return status
        docker_id = pod.docker_ids.get(name)
        if docker_id is None:
            status["state"] = {"waiting": {"reason": "ContainerCreating"}}
            return status
        try:
            raw = self.docker.inspect_raw(docker_id)
        except ContainerNotFound:
            status["state"] = {
                "terminated": {
                    "exitCode": 137,
                    "reason": "ContainerStatusUnknown",
                    "message": "The container could not be located when the pod was terminated",
                }
            }
            return status
        state = raw.get("State") or {}
        status["containerID"] = f"docker://{docker_id}"
        status["imageID"] = f"docker-pullable://{raw.get('Image', '')}"
        if state.get("Running") and not state.get("Paused"):
            status.update(ready=True, started=True)
            status["state"] = {"running": {"startedAt": _docker_time(state.get("StartedAt"))}}
        elif state.get("Status") == "created":
            status["state"] = {"waiting": {"reason": "ContainerCreating"}}
        else:
            code = int(state.get("ExitCode") or 0)
            reason = "OOMKilled" if state.get("OOMKilled") else ("Completed" if code == 0 else "Error")
            status["state"] = {
                "terminated": {
                    "exitCode": code,
                    "reason": reason,
                    "startedAt": _docker_time(state.get("StartedAt")),
                    "finishedAt": _docker_time(state.get("FinishedAt")),
                    "containerID": f"docker://{docker_id}",
                }
            }
        return status

    def report_status(self, pod: Pod, view: dict[str, Any]) -> str:
        """Write the pod's status, read from the Docker engine now, into `view` (a copy of its document), as
        the kubelet reports it: containers' states, phase, conditions. Returns the phase."""
        spec = view.get("spec") or {}
        statuses = [self.container_status(pod, c) for c in spec.get("containers") or []]
        ephemeral = [self.container_status(pod, c) for c in spec.get("ephemeralContainers") or []]
        status = view.setdefault("status", {})
        states = [next(iter(s["state"])) for s in statuses]
        if pod.evicted:
            phase = "Failed"
            status["reason"] = "Evicted"
            status["message"] = pod.evicted
        elif any(s == "running" for s in states):
            phase = "Running"
        elif states and all(s == "terminated" for s in states):
            codes = [s["state"]["terminated"]["exitCode"] for s in statuses]
            phase = "Succeeded" if all(c == 0 for c in codes) else "Failed"
        else:
            phase = "Pending"
        ready = phase == "Running" and all(s["ready"] for s in statuses)
        status.update(
            phase=phase,
            hostIP="127.0.0.1",
            qosClass="Burstable"
            if any((c.get("resources") or {}).get("limits") for c in spec.get("containers") or [])
            else "BestEffort",
            containerStatuses=statuses,
            conditions=[
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastTransitionTime": view["metadata"]["creationTimestamp"],
                },
                {
                    "type": "Initialized",
                    "status": "True",
                    "lastTransitionTime": view["metadata"]["creationTimestamp"],
                },
                {
                    "type": "ContainersReady",
                    "status": str(ready),
                    "lastTransitionTime": view["metadata"]["creationTimestamp"],
                },
                {
                    "type": "Ready",
                    "status": str(ready),
                    "lastTransitionTime": view["metadata"]["creationTimestamp"],
                },
            ],
        )
        if pod.evicted:
            status["conditions"].append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "TerminationByKubelet",
                    "message": pod.evicted,
                }
            )
        if ephemeral:
            status["ephemeralContainerStatuses"] = ephemeral
        return phase

    def finished(self, pod: Pod) -> bool:
        """Every container of the pod has terminated (phase Succeeded or Failed)."""
        containers = pod.document["spec"].get("containers") or []
        states = [next(iter(self.container_status(pod, c)["state"])) for c in containers]
        return bool(states) and all(state == "terminated" for state in states)

    def logs(self, pod: Pod, params: Mapping[str, str]) -> bytes:
        """pods/log: the container's Docker log (stdout and stderr merged in time order)."""
        name = str(pod.document["metadata"]["name"])
        spec = pod.document["spec"]
        every = [c.get("name") for c in spec.get("containers") or []] + [
            c.get("name") for c in spec.get("ephemeralContainers") or []
        ]
        container = params.get("container")
        if params.get("sinceSeconds") and params.get("sinceTime"):
            raise ApiStatus(
                422,
                "Invalid",
                f'PodLogOptions "{name}" is invalid: sinceTime: Forbidden: at most one of `sinceTime` or '
                "`sinceSeconds` may be specified",
                {"name": name, "kind": "PodLogOptions"},
            )
        since_time: dt.datetime | None = None
        if params.get("sinceTime"):
            since_time = _parse_rfc3339(params["sinceTime"])
            if since_time is None:
                raise ApiStatus(
                    400,
                    "BadRequest",
                    f'parsing time "{params["sinceTime"]}" as "2006-01-02T15:04:05Z07:00": cannot parse',
                )
        if not container:
            if len(spec.get("containers") or []) != 1:
                listed = " ".join(str(n) for n in every)
                raise ApiStatus(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {name}, choose one of: [{listed}]",
                )
            container = str(spec["containers"][0].get("name"))
        if container not in every:
            raise ApiStatus(400, "BadRequest", f"container {container} is not valid for pod {name}")
        if params.get("previous") in ("true", "1"):
            # The kubelet's answer: no container of the fixture ever restarts (restartPolicy Never).
            raise ApiStatus(
                400, "BadRequest", f'previous terminated container "{container}" in pod "{name}" not found'
            )
        docker_id = pod.docker_ids.get(container)
        if docker_id is None:
            reason = pod.waiting.get(container, ("ContainerCreating", ""))[0]
            raise ApiStatus(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: {reason}',
            )
        query: dict[str, str | int] = {"stdout": 1, "stderr": 1, "timestamps": 1}
        if params.get("sinceSeconds"):
            query["since"] = int(time.time() - int(params["sinceSeconds"]))
        elif since_time is not None:
            query["since"] = int(since_time.timestamp())  # whole seconds; the exact cut is below
        if params.get("tailLines"):
            query["tail"] = params["tailLines"]
        response = self.docker._request(
            "GET", f"/containers/{docker_id}/logs", params=query, container=docker_id
        )
        out, err = demux_logs(response.content)
        lines = sorted(
            (line for stream in (out, err) for line in stream.splitlines(keepends=True) if line),
            key=_log_time,
        )
        if since_time is not None:
            # The API server passes sinceTime on to the kubelet to the second (metav1.Time), and the
            # kubelet keeps the lines written at or after it.
            cut = _log_key(since_time.replace(microsecond=0))
            lines = [line for line in lines if _log_time(line) >= cut]
        if params.get("timestamps") not in ("true", "1"):
            lines = [line.split(b" ", 1)[1] if b" " in line else line for line in lines]
        data = b"".join(lines)
        if params.get("limitBytes"):
            data = data[: int(params["limitBytes"])]
        return data


def _docker_time(value: str | None) -> str | None:
    if not value or value.startswith("0001-"):
        return None
    return value.split(".")[0].rstrip("Z") + "Z"


def _log_time(line: bytes) -> tuple[bytes, bytes]:
    """A Docker log line's RFC 3339 timestamp as a sortable key (its nanoseconds padded to 9 digits)."""
    stamp = line.split(b" ", 1)[0].rstrip(b"Z")
    seconds, _, fraction = stamp.partition(b".")
    return seconds, fraction.ljust(9, b"0")


def _log_key(moment: dt.datetime) -> tuple[bytes, bytes]:
    """A UTC time as `_log_time`'s key."""
    utc = moment.astimezone(dt.timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S").encode(), f"{utc.microsecond:06d}000".encode()


def _parse_rfc3339(text: str) -> dt.datetime | None:
    """An RFC 3339 time (``Z`` or an offset, up to nanoseconds: the fraction is cut to microseconds)."""
    head, dot, rest = text.strip().partition(".")
    if dot:
        digits = "".join(itertools.takewhile(str.isdigit, rest))
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits) :]}"
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def parse_quantity(text: str) -> int:
    """A Kubernetes memory quantity (``256Mi``, ``1G``, ``1e9``) in bytes."""
    units = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
    }
    for suffix, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text))
