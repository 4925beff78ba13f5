"""Why a run's storage could not be read, in words that say what to do: (condition reason, message).

A missing Secret, a Secret without the keys, a bucket that does not exist, keys the endpoint refuses, an
endpoint the operator may not use and one that sends more than a bounded reader accepts all need a person; only
an endpoint that does not answer (refused, reset, timed out, 5xx) is worth waiting for, and only that one says
"retrying until it answers" (reason UNREACHABLE, which the planner treats as an outage).
"""

from __future__ import annotations

from typing import Any, Optional

from cpt_core.storage import StorageError, scrub
from cpt_core.storage.errors import AccessDenied, BucketMissing, DeadlineExceeded, LimitExceeded, Unreachable

UNREACHABLE = "StorageUnavailable"  # the only reason a wait can cure (planner.plan says "until it answers")
SECRET_MISSING = "StorageSecretMissing"
SECRET_INCOMPLETE = "StorageSecretIncomplete"
SECRET_UNREADABLE = "StorageSecretUnreadable"
BUCKET_MISSING = "StorageBucketMissing"
ACCESS_DENIED = "StorageAccessDenied"
LIMIT_EXCEEDED = "StorageLimitExceeded"
NOT_ALLOWED = "StorageEndpointNotAllowed"
OTHER = "StorageError"
MAX_MESSAGE = 600


class SecretProblem(Exception):
    """The run's spec.storage.secretRef could not be used (reason: SECRET_*)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def secret_problem(exc: BaseException, namespace: str, ref: str) -> SecretProblem:
    """What reading the Secret `ref` raised (the API client's error carries the HTTP status)."""
    status = getattr(exc, "status", None)
    if status == 404:
        return SecretProblem(SECRET_MISSING, (
            f"Secret {namespace}/{ref} (spec.storage.secretRef) does not exist: create it with keys "
            f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (kubectl -n {namespace} create secret generic {ref} "
            "--from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=...)"))
    if status == 403:
        return SecretProblem(SECRET_UNREADABLE, (
            f"the operator may not read Secret {namespace}/{ref} (403): its role needs get on secrets in "
            f"{namespace} (the chart grants it in the namespaces it watches)"))
    return SecretProblem(UNREACHABLE, f"Secret {namespace}/{ref} could not be read ({type(exc).__name__}: "
                                      f"{scrub(str(exc))[:200]}); retrying until the API server answers")


def missing_keys(namespace: str, ref: str, missing: list[str]) -> SecretProblem:
    return SecretProblem(SECRET_INCOMPLETE, (
        f"Secret {namespace}/{ref} (spec.storage.secretRef) lacks {' and '.join(missing)}: add "
        f"{'them' if len(missing) > 1 else 'it'} (kubectl -n {namespace} edit secret {ref}); nothing is read "
        "until it has both keys"))


def explain(exc: BaseException, storage: Any, deadline: float) -> tuple[str, str]:
    """(reason, message) for an exception of a storage read of `storage` (a validated spec.storage)."""
    where = endpoint_name(storage.endpoint, storage.region)
    detail = scrub(str(exc))[:300]
    if isinstance(exc, SecretProblem):
        return exc.reason, str(exc)
    if isinstance(exc, BucketMissing):
        bucket = storage.uri[len("s3://"):].partition("/")[0]
        return BUCKET_MISSING, (f"bucket {bucket!r} does not exist at {where} (NoSuchBucket): create it, or fix "
                                "spec.storage.uri or spec.storage.endpoint")
    if isinstance(exc, AccessDenied):
        keys = (f"the keys in Secret {storage.secret_ref}" if storage.secret_ref
                else "the operator's own identity (no spec.storage.secretRef)")
        return ACCESS_DENIED, (f"{where} refused {keys} for {storage.uri} ({detail}): check that the keys are "
                               "right and not expired, and that their policy allows ListBucket on the bucket and "
                               "GetObject and PutObject under the prefix")
    if isinstance(exc, LimitExceeded):
        return LIMIT_EXCEEDED, (f"{where} sent more than the operator reads for one run ({detail}); no S3 server "
                                "answers a run's few small objects like that: fix the endpoint or the prefix "
                                "(nothing was deleted; read again at the next resync)")
    if isinstance(exc, Unreachable) or (isinstance(exc, StorageError) and exc.transient):
        return UNREACHABLE, not_answering(where, deadline, "" if isinstance(exc, DeadlineExceeded) else detail)
    return OTHER, f"cannot read {storage.uri}: {type(exc).__name__}: {detail}"


def not_answering(where: str, deadline: float, detail: str = "") -> str:
    return (f"{where} did not answer within {deadline:g} s" + (f" ({detail})" if detail else "")
            + "; keeping everything as it is and retrying until it answers")


def endpoint_name(endpoint: Optional[str], region: Optional[str]) -> str:
    """How the endpoint is named in messages and matched by CPT_STORAGE_ENDPOINTS: the spec's URL, or AWS's own."""
    if endpoint:
        return endpoint.rstrip("/")
    return f"https://s3.{region or 'us-east-1'}.amazonaws.com"
