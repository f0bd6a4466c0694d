"""Errors that end a job after its own output has already said what failed (jobs/entry.py exits 1 on them)."""


class SweepError(RuntimeError):
    """One or more trials (cells, pre-trainings) failed; each one's error and traceback were shown as it failed."""
