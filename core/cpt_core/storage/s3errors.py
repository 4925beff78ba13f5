"""How S3 failures leave the store: scrubbed, without their chained exception, classified by what a person must
do about them (errors.py)."""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

from botocore.exceptions import ClientError

from cpt_core.storage.errors import AccessDenied, BucketMissing, NotFound, StorageError, Unreachable
from cpt_core.storage.retry import is_transient

F = TypeVar("F", bound=Callable[..., Any])
# 403 codes: the keys are wrong or expired, or the policy does not grant the request.
DENIED_CODES = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                          "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem"})


def guard(op: str) -> Callable[[F], F]:
    """Turn any non-storage exception into a StorageError whose message is scrubbed and which carries no
    chained exception (the original could hold request details); NotFound for 404s."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except StorageError as exc:
                err: StorageError = exc
            except Exception as exc:  # noqa: BLE001 - every backend error is translated
                err = translate(exc, f"S3 {op} in {self.uri}")
            err.__cause__ = err.__context__ = None
            err.__suppress_context__ = True
            raise err

        return inner  # type: ignore[return-value]

    return wrap


def translate(exc: BaseException, where: str) -> StorageError:
    code_, status_ = code(exc), status(exc)
    if code_ == "NoSuchBucket":
        return BucketMissing(f"{where}: NoSuchBucket: the bucket does not exist")
    if status_ == 404 or code_ in ("NoSuchKey", "404", "NotFound"):
        return NotFound(f"{where}: not found")
    if code_ in DENIED_CODES or status_ == 403:
        return AccessDenied(f"{where}: {code_ or status_}: {exc}")
    if is_transient(exc):
        return Unreachable(f"{where}: {type(exc).__name__}: {exc}")
    return StorageError(f"{where}: {type(exc).__name__}: {exc}")


def code(exc: BaseException) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""


def status(exc: BaseException) -> int:
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0
