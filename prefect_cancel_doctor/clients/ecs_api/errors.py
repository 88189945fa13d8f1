"""What can go wrong reading ECS, in words an on-call can act on."""

from __future__ import annotations

import re

#: The IAM actions the doctor uses (resolve adds ecs:StopTask).
READ_ACTIONS = "ecs:DescribeTasks, ecs:DescribeTaskDefinition and ecs:DescribeContainerInstances"


class EcsError(Exception):
    """The ECS API could not be read (no credentials, access denied, no region, unreachable)."""

    def __init__(self, message: str, hint: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint
        #: The API's error code (AccessDeniedException, ...), or the botocore exception's name.
        self.code = code


def _message(text: str) -> str:
    """The message of an error body, also where an endpoint answered XML to a JSON API."""
    match = re.search(r"<Message>(.*?)</Message>", text, re.S)
    return (match.group(1) if match else text).strip()[:500]


def classify(exc: BaseException, action: str) -> EcsError:
    """An `EcsError` for a botocore/boto3 exception raised by `action` ("DescribeTasks")."""
    if isinstance(exc, ImportError):
        return EcsError(
            f"boto3 is not installed, so ecs:{action} cannot be called ({exc})",
            "install the doctor's ecs extra (`uv tool install 'prefect-cancel-doctor[ecs]'`) or boto3",
            code="ImportError",
        )
    from botocore import exceptions as bx

    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return EcsError(
            f"no AWS credentials for ecs:{action} ({exc})",
            "give the doctor credentials through boto3's chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE (~/.aws/config), or the host's instance or task role",
            code=type(exc).__name__,
        )
    if isinstance(exc, bx.ProfileNotFound):
        return EcsError(f"AWS profile not found: {exc}", "set AWS_PROFILE to a profile of ~/.aws/config")
    if isinstance(exc, bx.NoRegionError):
        return EcsError(
            f"no AWS region for ecs:{action}",
            "set AWS_REGION or AWS_DEFAULT_REGION (the task's region, as its ARN shows)",
            code="NoRegionError",
        )
    if isinstance(exc, bx.ClientError):
        response = exc.response if isinstance(exc.response, dict) else {}
        error = response.get("Error", {})
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(error.get("Code") or "ClientError")
        message = _message(str(error.get("Message") or exc))
        denied = code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation")
        if denied or (status == 403 and code.isdigit()):  # a 403 whose body botocore could not read
            return EcsError(
                f"access denied to ecs:{action}: {message}",
                f"grant the doctor's identity {READ_ACTIONS} (and ecs:StopTask for resolve)",
                code=code,
            )
        if code in (
            "UnrecognizedClientException",
            "InvalidClientTokenId",
            "ExpiredTokenException",
            "ExpiredToken",
            "InvalidSignatureException",
            "SignatureDoesNotMatch",
        ):
            return EcsError(
                f"the AWS credentials were refused for ecs:{action} ({code}: {message})",
                "check or refresh the doctor's AWS credentials (AWS_PROFILE, `aws sts get-caller-identity`)",
                code=code,
            )
        if code == "ClusterNotFoundException":
            return EcsError(f"ECS cluster not found: {message}", code=code)
        return EcsError(f"ecs:{action} failed ({code}: {message})", code=code)
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError)):
        return EcsError(
            f"the ECS API could not be reached for ecs:{action}: {exc}",
            "check the network, AWS_REGION, and AWS_ENDPOINT_URL_ECS / AWS_ENDPOINT_URL if set",
            code=type(exc).__name__,
        )
    if isinstance(exc, bx.BotoCoreError):
        return EcsError(f"ecs:{action} failed: {exc}", code=type(exc).__name__)
    return EcsError(f"ecs:{action} failed: {type(exc).__name__}: {exc}", code=type(exc).__name__)
