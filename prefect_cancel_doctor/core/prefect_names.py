"""Prefect's names the doctor reads by: environment variables, labels and settings, each spelled once.

Plain strings only (no import of `prefect`): a process's environment, a container's labels and
a profile's keys are matched against them.
"""

from __future__ import annotations

#: The environment variable every process of a flow run carries (set by the worker or Runner).
FLOW_RUN_ENV = "PREFECT__FLOW_RUN_ID"
#: `FLOW_RUN_ENV` as an entry of a raw `/proc/PID/environ` starts.
FLOW_RUN_ENV_ENTRY = f"{FLOW_RUN_ENV}=".encode()

#: The label prefect-docker 0.7.4 puts on a run's container (from `prefect.io/flow-run-id`).
DOCKER_FLOW_RUN_LABEL = "io.prefect.flow-run-id"
#: The label prefect-kubernetes puts on a run's Job (and pods, via the template).
KUBE_FLOW_RUN_LABEL = "prefect.io/flow-run-id"

#: What a flow run does on SIGTERM.
SIGTERM_BEHAVIOR_SETTING = "PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"
#: Whether a Runner marks a run Crashed when it could not cancel it.
CRASH_ON_CANCELLATION_FAILURE_SETTING = "PREFECT_RUNNER_CRASH_ON_CANCELLATION_FAILURE"
#: Prefect settings in a run's environment that change what a cancel does. Only these names are
#: kept from a container's environment: it may hold secrets.
CANCEL_SETTINGS = (SIGTERM_BEHAVIOR_SETTING, CRASH_ON_CANCELLATION_FAILURE_SETTING)

#: The client settings that say where the API is and how to authenticate.
API_URL_SETTING = "PREFECT_API_URL"
API_KEY_SETTING = "PREFECT_API_KEY"
API_AUTH_STRING_SETTING = "PREFECT_API_AUTH_STRING"
API_TLS_INSECURE_SKIP_VERIFY_SETTING = "PREFECT_API_TLS_INSECURE_SKIP_VERIFY"
API_SSL_CERT_FILE_SETTING = "PREFECT_API_SSL_CERT_FILE"

__all__ = [
    "API_AUTH_STRING_SETTING",
    "API_KEY_SETTING",
    "API_SSL_CERT_FILE_SETTING",
    "API_TLS_INSECURE_SKIP_VERIFY_SETTING",
    "API_URL_SETTING",
    "CANCEL_SETTINGS",
    "CRASH_ON_CANCELLATION_FAILURE_SETTING",
    "DOCKER_FLOW_RUN_LABEL",
    "FLOW_RUN_ENV",
    "FLOW_RUN_ENV_ENTRY",
    "KUBE_FLOW_RUN_LABEL",
    "SIGTERM_BEHAVIOR_SETTING",
]
