"""The report flow's old module path, kept for the deployments made with it.

A Prefect deployment stores its entrypoint and imports it for every run: those
made with `prefect_cancel_doctor.flows:cancellation_health_report` (the path
before the report became the `health` package) keep running. New deployments
use `prefect_cancel_doctor.health.flow:cancellation_health_report`.
"""

from __future__ import annotations

from prefect_cancel_doctor.health.flow import cancellation_health_report

__all__ = ["cancellation_health_report"]
