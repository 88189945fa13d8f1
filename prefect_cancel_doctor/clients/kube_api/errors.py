"""The Kubernetes client's errors, and the API's failure `Status` as one of them."""

from __future__ import annotations

import contextlib

from prefect_cancel_doctor.clients._http import httpx
from prefect_cancel_doctor.clients.kube_config import KubeConnection
from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.core.redact import redact_text, scrub
from prefect_cancel_doctor.errors import DoctorError


class KubeError(DoctorError):
    """The Kubernetes API could not be used; the hint says what to do."""


class KubeUnreachable(KubeError):
    """No API server answers at the configured address (or TLS failed)."""


class KubeApiError(KubeError):
    """The API answered with a `Status` failure: `code`, `reason` and `message` as it sent them."""

    def __init__(
        self, message: str, code: int, reason: str, api_message: str, hint: str | None = None
    ) -> None:
        super().__init__(message, hint)
        self.code = code
        self.reason = reason
        self.api_message = api_message


class KubeNotFound(KubeApiError):
    """404: the object (or the subresource: ephemeral containers disabled) does not exist."""


def api_error(method: str, path: str, response: httpx.Response, connection: KubeConnection) -> KubeApiError:
    code = response.status_code
    reason, message = "", response.text.strip()[:500]
    with contextlib.suppress(ValueError, AttributeError):
        status = response.json()
        if isinstance(status, dict) and status.get("kind") == "Status":
            reason = str(status.get("reason") or "")
            message = str(status.get("message") or message)
    message = visible(redact_text(scrub(message, cut=True)), 500)
    text = f"Kubernetes API {code} {reason or response.reason_phrase} on {method} {path}: {message}"
    hint = None
    if code == 401:
        hint = (
            f"the API server did not accept the {connection.auth_method} of {connection.source}: "
            "log in again (`kubectl get pods` should work with the same kubeconfig and context)"
        )
    elif code == 403:
        hint = (
            "grant the verb in a Role bound to this user or service account "
            "(see the README's Kubernetes Role)"
        )
    kind = KubeNotFound if code == 404 else KubeApiError
    return kind(text, code, reason, message, hint)
