"""Network detectors: pure functions from events (plus profile and baseline) to findings."""
