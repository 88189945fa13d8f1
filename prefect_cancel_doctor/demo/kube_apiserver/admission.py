"""What the API server does to a pod before it stores a change: defaulting, validation and admission.

Defaults of a stored container, the refusal of a pod update that changes more than its metadata, the
validation of new ephemeral containers, and Pod Security admission of their capabilities; each raises
the API server's `ApiStatus` (422 ``Invalid``, 403 ``Forbidden``) with its words. Pure functions on
JSON documents; they import only `status`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect_cancel_doctor.demo.kube_apiserver.status import ApiStatus

#: Capabilities Pod Security's baseline level allows to add (everything else is forbidden).
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
        "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    }
)  # fmt: skip


def container_defaults(container: dict[str, Any], *, ephemeral: bool = False) -> None:
    """The fields the API server defaults in every container it stores (clients such as kubectl
    debug read them back)."""
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("imagePullPolicy", "IfNotPresent")
    if not ephemeral:
        container.setdefault("resources", {})


def validate_pod_update(name: str, before: Mapping[str, Any], merged: Any) -> dict[str, Any]:
    """The pod `merged` (a PATCH applied to `before`) if the API server accepts it as an update: it must
    keep its metadata, and its spec may not change (the fields a real API server lets change, such as a
    container's image, are not served here)."""
    if not isinstance(merged, dict) or not isinstance(merged.get("metadata"), dict):
        raise ApiStatus(
            422,
            "Invalid",
            f'Pod "{name}" is invalid: metadata: Required value',
            {"name": name, "kind": "Pod"},
        )
    if merged.get("spec") != before.get("spec"):
        forbidden = (
            "Forbidden: pod updates may not change fields other "
            "than `spec.containers[*].image`, `spec.initContainers[*].image`, "
            "`spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing "
            "tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it "
            "was previously negative)"
        )
        raise ApiStatus(
            422,
            "Invalid",
            f'Pod "{name}" is invalid: spec: {forbidden}',
            # kubectl prints the causes ("The Pod "x" is invalid: spec: Forbidden: ...").
            {
                "name": name,
                "kind": "Pod",
                "causes": [{"reason": "FieldValueForbidden", "message": forbidden, "field": "spec"}],
            },
        )
    return merged


def validate_ephemeral(name: str, spec: Mapping[str, Any], before: list[Any], after: list[Any]) -> list[Any]:
    """The ephemeral containers `after` a PATCH of pods/ephemeralcontainers that `before` were in the
    pod (`spec`), validated as the API server does; returns the added ones.

    Existing ephemeral containers may not change or go, names are unique in the pod,
    ``targetContainerName`` must exist, and fields an ephemeral container cannot have are refused: 422
    ``Invalid`` listing every error."""
    errors = []
    names = [c.get("name") for c in spec.get("containers") or []]
    for old in before:
        new = next((c for c in after if c.get("name") == old.get("name")), None)
        if new is None or new != old:
            errors.append(
                "spec.ephemeralContainers: Forbidden: existing ephemeral containers "
                f'"{old.get("name")}" may not be removed or changed'
            )
    added = [c for c in after if c.get("name") not in {o.get("name") for o in before}]
    for index, container in enumerate(added, len(before)):
        cname = container.get("name")
        if not cname:
            errors.append(f"spec.ephemeralContainers[{index}].name: Required value")
        elif cname in names:
            errors.append(f'spec.ephemeralContainers[{index}].name: Duplicate value: "{cname}"')
        if not container.get("image"):
            errors.append(f"spec.ephemeralContainers[{index}].image: Required value")
        target = container.get("targetContainerName")
        if target and target not in names:
            errors.append(f'spec.ephemeralContainers[{index}].targetContainerName: Not found: "{target}"')
        for forbidden in (
            "ports",
            "resources",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
            "lifecycle",
        ):
            if container.get(forbidden):
                errors.append(
                    f"spec.ephemeralContainers[{index}].{forbidden}: Forbidden: "
                    "cannot be set for an Ephemeral Container"
                )
    if errors:
        raise ApiStatus(
            422,
            "Invalid",
            f'Pod "{name}" is invalid: ' + ("[" + ", ".join(errors) + "]" if len(errors) > 1 else errors[0]),
            {
                "name": name,
                "kind": "Pod",
                "causes": [{"reason": "FieldValueInvalid", "message": e} for e in errors],
            },
        )
    return added


def admit_ephemeral(name: str, level: str | None, added: list[Any]) -> None:
    """Pod Security admission of new ephemeral containers in a namespace enforcing `level`: ``baseline``
    and ``restricted`` forbid adding capabilities beyond `BASELINE_CAPABILITIES` (403, with the API's own
    message)."""
    if level in ("baseline", "restricted"):
        for container in added:
            caps = ((container.get("securityContext") or {}).get("capabilities") or {}).get("add") or []
            bad = [
                c
                for c in caps
                if c not in BASELINE_CAPABILITIES and not (level == "restricted" and c == "NET_BIND_SERVICE")
            ]
            if bad:
                listed = ", ".join(f'"{c}"' for c in bad)
                raise ApiStatus(
                    403,
                    "Forbidden",
                    f'pods "{name}" is forbidden: violates PodSecurity "{level}:latest": '
                    f'non-default capabilities (container "{container.get("name")}" must not '
                    f"include {listed} in securityContext.capabilities.add)",
                    {"name": name, "kind": "pods"},
                )
