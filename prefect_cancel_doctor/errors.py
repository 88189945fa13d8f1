"""One exception family. Each class knows its exit code and the hint to print.

The CLI catches only `DoctorError`; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_STUCK = 1
EXIT_USAGE = 2
EXIT_API = 3
#: A bug in the doctor: one line on stderr, the traceback in a file (never 1, which means "stuck").
EXIT_INTERNAL = 4
#: A confirmation answered no (`resolve`, `scan --resolve-orphans`): nothing was done. No error, and
#: not 1 either: 1 says what the doctor found, this what the person at the terminal chose.
EXIT_DECLINED = 5
#: Interrupted (Ctrl-C), as shells report a SIGINT.
EXIT_INTERRUPTED = 130


class DoctorError(Exception):
    """Base class: a failure the user can act on."""

    exit_code = EXIT_USAGE
    hint: str | None = None

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigurationError(DoctorError):
    """No usable Prefect connection or a bad flag value."""

    exit_code = EXIT_USAGE


class ApiUnreachable(DoctorError):
    """The Prefect API could not be reached (DNS, refused, timeout, TLS)."""

    exit_code = EXIT_API
    hint = "check --api-url / PREFECT_API_URL; for a self-hosted server it ends in /api"


class ApiRefused(DoctorError):
    """The Prefect API answered with an error (401/403/404/5xx)."""

    exit_code = EXIT_API


class TargetError(DoctorError):
    """`inspect` was pointed at something that cannot be diagnosed."""

    exit_code = EXIT_USAGE
