"""Retries with exponential backoff for steps botocore does not retry itself (reading a response body,
a whole-file transfer that ran out of botocore's attempts, a conditional-write conflict)."""

from __future__ import annotations

import logging
import random
import socket
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "RequestTimeTooSkewed",
    "Throttling", "ThrottlingException", "ConditionalRequestConflict", "OperationAborted",
    "500", "502", "503", "504",
})


@dataclass(frozen=True)
class RetryPolicy:
    """attempts counts the first try; the delay before try n (n >= 2) is base * 2**(n-2), capped, jittered."""

    attempts: int = 4
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)


DEFAULT_RETRY = RetryPolicy()


def is_transient(exc: BaseException) -> bool:
    """Could the same call succeed if tried again? Walks the exception's cause/context chain."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if getattr(cur, "transient", False):
            return True
        if _transient_one(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _transient_one(exc: BaseException) -> bool:
    try:
        from botocore import exceptions as bex
    except ImportError:  # pragma: no cover - boto3 is a base dependency
        bex = None  # type: ignore[assignment]
    if bex is not None:
        if isinstance(exc, bex.ClientError):
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return str(err.get("Code")) in TRANSIENT_CODES or status in (500, 502, 503, 504)
        if isinstance(exc, (bex.ConnectionError, bex.HTTPClientError, bex.ResponseStreamingError,
                            bex.IncompleteReadError, bex.ReadTimeoutError, bex.ConnectTimeoutError)):
            return True
    try:
        from urllib3.exceptions import HTTPError as Urllib3Error
    except ImportError:  # pragma: no cover
        Urllib3Error = ()  # type: ignore[assignment,misc]
    return isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, Urllib3Error))


def retry_call(fn: Callable[[], T], *, policy: RetryPolicy = DEFAULT_RETRY, what: str = "storage call",
               transient: Callable[[BaseException], bool] = is_transient) -> T:
    """Call fn until it succeeds, a non-transient error occurs, or attempts run out (the last error is raised)."""
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:
            if attempt >= policy.attempts or not transient(exc):
                raise
            delay = policy.delay(attempt)
            log.warning("%s failed (%s), retry %d/%d in %.2fs", what, type(exc).__name__, attempt,
                        policy.attempts - 1, delay)
        time.sleep(delay)
        attempt += 1
