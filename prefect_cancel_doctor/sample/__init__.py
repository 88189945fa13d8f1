"""Sampling: the kernel's view of a process (/proc) merged with py-spy's stacks."""

from prefect_cancel_doctor.sample.pyspy import (
    NativeUnavailable,
    NotPython,
    PermissionDenied,
    ProcessGone,
    PySpyNotFound,
    SamplerError,
    SampleTimeout,
)
from prefect_cancel_doctor.sample.sampler import (
    SampleRequest,
    sample_many,
    sample_process,
)

__all__ = [
    "NativeUnavailable",
    "NotPython",
    "PermissionDenied",
    "ProcessGone",
    "PySpyNotFound",
    "SampleRequest",
    "SampleTimeout",
    "SamplerError",
    "sample_many",
    "sample_process",
]
