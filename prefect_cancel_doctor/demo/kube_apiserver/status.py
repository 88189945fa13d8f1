"""The API server's error answers: `ApiStatus`, raised anywhere in the fixture and sent as a `Status` body.

The bottom of the fixture's layers (see `kube_apiserver`): it imports nothing of the fixture.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ApiStatus(Exception):
    """An error the server answers with a `Status` body."""

    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        # The API server sends `details: {}` on a missing resource (kubectl reads details.name).
        self.details = None if details is None else dict(details)

    def body(self) -> dict[str, Any]:
        """The `Status` document."""
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


def not_found(resource: str, name: str, group: str = "") -> ApiStatus:
    """The API server's 404 for a missing object (``pods "x" not found``, ``jobs.batch "y" not found``)."""
    kind = resource.split("/")[0]
    details = {"name": name, "kind": kind} | ({"group": group} if group else {})
    what = f"{kind}.{group}" if group else kind
    return ApiStatus(404, "NotFound", f'{what} "{name}" not found', details)
