"""Storage exceptions. Their messages pass through `scrub`, so a credential can never leak through one."""

from __future__ import annotations

from cpt_core.storage.redact import scrub


class StorageError(Exception):
    """Any storage failure. `transient` says whether retrying later could help."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(scrub(message))
        self.transient = transient


class NotFound(StorageError, LookupError):
    """The key does not exist."""


class CorruptTask(StorageError):
    """A committed task's files do not match its manifest (size or sha256); the task must not be used."""


class CommitConflict(StorageError):
    """A different manifest (other spec_hash or other files) already commits this task; reset it first."""
