"""The path of a scan: API → each kind's locate → sample → diagnose → `Report` (`engine`)."""
