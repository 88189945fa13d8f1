"""The floor everything stands on: text made inert (`inert`), secrets redacted (`redact`),
durations and UI links in words. Knows nothing of Prefect, targets or reports."""
