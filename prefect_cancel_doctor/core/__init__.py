"""The floor everything stands on: text made inert (`inert`), secrets redacted (`redact`),
durations and UI links in words, and what fixes each cause (`remedies`). Imports only the model."""
