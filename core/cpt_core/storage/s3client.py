"""S3 clients that share one parsed botocore model, and the wall-clock deadline a bounded reader gives its calls.

A boto3 `Session()` per client parses botocore's S3 model and endpoint rules again (~300 ms of CPU and ~12 MB per
client, measured in bench/storage_endpoints). Here every client comes from one botocore data loader, which caches
the parsed JSON, so a further client costs ~15 ms and ~0.4 MB. Clients with explicit credentials come from one
shared botocore Session; clients on the default credential chain (environment, profile, web identity) from a
fresh Session over the same loader, so each resolves credentials as the process finds them now. botocore
Sessions are not thread-safe for client creation (boto/botocore#1246): creation is serialised by a lock; the
clients themselves are thread-safe.

`deadline(seconds)` bounds every request a thread sends meanwhile: a `before-send` hook on each client raises
DeadlineExceeded instead of sending once the time is up, so botocore's retries and the store's own stop there.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import botocore.session
from botocore.config import Config
from botocore.loaders import Loader, create_loader

from cpt_core.storage.errors import DeadlineExceeded

_create_lock = threading.Lock()
_loader: Optional[Loader] = None
_session: Optional[botocore.session.Session] = None
_local = threading.local()


@dataclass(frozen=True)
class Timeouts:
    """Per-socket timeouts (seconds) and botocore's attempts per request (the first one included)."""

    connect: float = 10.0
    read: float = 120.0
    attempts: int = 6


def _new_session() -> botocore.session.Session:
    global _loader
    if _loader is None:
        _loader = create_loader()
    session = botocore.session.Session()
    session.register_component("data_loader", _loader)
    return session


def make_client(*, region: str, endpoint: Optional[str], path_style: bool, timeouts: Timeouts,
                max_pool_connections: int, access_key_id: Optional[str] = None,
                secret_access_key: Optional[str] = None, session_token: Optional[str] = None) -> Any:
    """A botocore S3 client over the process's shared model; explicit keys, or None for the default chain."""
    global _session
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path" if path_style else "auto"},
        retries={"mode": "standard", "total_max_attempts": timeouts.attempts},
        max_pool_connections=max_pool_connections,
        connect_timeout=timeouts.connect, read_timeout=timeouts.read, tcp_keepalive=True,
    )
    with _create_lock:
        if access_key_id:
            if _session is None:
                _session = _new_session()
            session = _session
        else:
            session = _new_session()
        client = session.create_client("s3", region_name=region, endpoint_url=endpoint, config=config,
                                       aws_access_key_id=access_key_id or None,
                                       aws_secret_access_key=secret_access_key or None,
                                       aws_session_token=session_token or None)
    client.meta.events.register("before-send.s3", _check_deadline)
    return client


@contextlib.contextmanager
def deadline(seconds: Optional[float], what: str = "storage", on_send: Optional[Callable[[], None]] = None,
             total: Optional[float] = None) -> Iterator[None]:
    """Every S3 request this thread sends inside the block is refused once `seconds` have passed (None: no
    deadline). Nested deadlines keep the earlier one. `on_send` is called before each request goes out (a
    caller watching the read sees it make progress: each request means the one before it was answered).
    `total`: the deadline as the caller gave it, for messages (`seconds` may be what is left of it)."""
    previous = getattr(_local, "deadline", None)
    previous_hook = getattr(_local, "on_send", None)
    if seconds is not None:
        until = time.monotonic() + seconds
        _local.deadline = (min(until, previous[0]) if previous else until,
                           (total or seconds) if not previous else previous[1],
                           what if not previous else previous[2])
    _local.on_send = on_send or previous_hook
    try:
        yield
    finally:
        _local.deadline = previous
        _local.on_send = previous_hook


def remaining() -> Optional[float]:
    """Seconds left before this thread's deadline (None: none set)."""
    current = getattr(_local, "deadline", None)
    return None if current is None else current[0] - time.monotonic()


def budget() -> Optional[float]:
    """The seconds this thread's deadline allowed in all (None: none set), for messages."""
    current = getattr(_local, "deadline", None)
    return None if current is None else current[1]


def _check_deadline(**_: Any) -> None:
    current = getattr(_local, "deadline", None)
    if current is not None and time.monotonic() >= current[0]:
        raise DeadlineExceeded(f"{current[2]} did not answer within {current[1]:g} s")
    hook = getattr(_local, "on_send", None)
    if hook is not None:
        hook()
