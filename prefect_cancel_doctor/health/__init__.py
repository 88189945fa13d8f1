"""The fleet health report: cancellation over a window, read from the API's history.

history.py reads the window's cancels; build.py computes the report
(`build_health_report` → `HealthReport`); flow.py runs it as a scheduled
Prefect flow. Import the module you need: this package imports nothing itself.
"""
