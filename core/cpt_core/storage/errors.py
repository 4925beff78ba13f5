"""Storage exceptions. Their messages pass through `scrub`, so a credential can never leak through one.

The subclasses tell apart what a person must do about a failure: wait (Unreachable, transient), fix the keys or
the policy (AccessDenied), create the bucket or fix the URI (BucketMissing), or stop pointing at a server that
does not behave like S3 (LimitExceeded). The operator turns each into its own condition reason.
"""

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


class Unreachable(StorageError):
    """The endpoint could not be reached or did not answer in time (refused, reset, DNS, timeouts, 5xx)."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message, transient=transient)


class DeadlineExceeded(Unreachable):
    """A read ran past the wall-clock deadline its caller gave it (storage.s3.deadline). Not retried within the
    same read: the deadline is over; a later read may succeed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


class AccessDenied(StorageError):
    """The endpoint answered 403: wrong or expired keys (InvalidAccessKeyId, SignatureDoesNotMatch, ExpiredToken)
    or a policy that does not grant the request (AccessDenied)."""


class BucketMissing(StorageError):
    """The bucket named by the URI does not exist at that endpoint (NoSuchBucket)."""


class LimitExceeded(StorageError):
    """The endpoint sent more than a bounded reader accepts: a listing past its page or key cap, an object past
    its byte cap (an S3 server does not do that to a run's small metadata; a hostile or broken one does)."""
