"""The fleet health report: cancellation over a window, read from the API's history.

One module per part, each importing only those before it:

- model.py: the report as frozen dataclasses (`HealthReport`, `Cancellation`, …); what the
  renderers (`render`, `layout`, `terminal`, `markdown`, `html`, `as_json`) read, and the
  JSON document (`HealthReport.to_dict`).
- statistics.py: time to cancel per group, the histogram, offenders, top causes (pure).
- rules.py: the `--fail-on` rules, parsed and evaluated on a report.
- options.py: `HealthOptions`, what `report` and the flow are asked to do.
- history.py: the window's cancels read from the API (events first).
- build.py: `build_health_report(api, options)`: history, runs stuck now, children, slots → the model.
- flow.py: the report as a scheduled Prefect flow (the one module here that imports Prefect).

This package imports nothing itself: a renderer importing the model loads no builder.
"""
