"""The Docker client's errors: each says what failed, its `hint` what to do."""

from __future__ import annotations

from prefect_cancel_doctor.errors import DoctorError


class DockerError(DoctorError):
    """The Docker engine could not be used; the message says what failed, `hint` what to do."""


class DockerConfigError(DockerError):
    """DOCKER_HOST (or the run's recorded engine URL) names something this client cannot use."""


class DockerUnreachable(DockerError):
    """No Docker engine answers at the configured address."""


class DockerPermissionDenied(DockerError):
    """The engine's socket exists but this user may not open it."""


class ContainerNotFound(DockerError):
    """The engine answered 404 for a container: it does not exist (any more)."""


class DockerApiError(DockerError):
    """The engine answered with an error status."""

    def __init__(self, message: str, status_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.status_code = status_code
