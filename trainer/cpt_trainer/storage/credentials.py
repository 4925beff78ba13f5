"""Where S3 credentials come from, and how they are kept out of logs and exception messages.

Order: a mounted Secret directory (env CPT_S3_CREDENTIALS_DIR, or DEFAULT_CREDENTIALS_DIR if it exists) holding
files AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY [/ AWS_SESSION_TOKEN], else boto3's default chain (the standard
AWS_* variables, profiles, web identity, instance metadata). Never from the spec.

Every secret we load is registered with `register_secret`: `scrub` replaces it in any text, and a log-record
factory (installed once, chained to the previous one) scrubs every log record of the process, botocore's
debug logs included.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

CREDENTIALS_DIR_ENV = "CPT_S3_CREDENTIALS_DIR"
DEFAULT_CREDENTIALS_DIR = "/var/run/secrets/cpt-s3"  # where the chart mounts spec.storage.secretRef
_FILES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
REDACTED = "***"

_lock = threading.Lock()
_secrets: set[str] = set()
_factory_installed = False


@dataclass(frozen=True)
class Credentials:
    """Explicit credentials; `repr` never shows the values."""

    access_key_id: str
    secret_access_key: str
    session_token: Optional[str] = None

    def __repr__(self) -> str:
        return f"Credentials(access_key_id={REDACTED}, secret_access_key={REDACTED})"


def register_secret(value: Optional[str]) -> None:
    """Remember a secret so `scrub` and the log-record factory redact it from now on."""
    global _factory_installed
    if not value or len(value) < 4:
        return
    with _lock:
        _secrets.add(value)
        if not _factory_installed:
            _install_log_scrubber()
            _factory_installed = True


def scrub(text: str) -> str:
    """Replace every registered secret in `text`."""
    if not _secrets:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _install_log_scrubber() -> None:
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:  # type: ignore[no-untyped-def]
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error handling
            return record
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:  # formatters reuse exc_text: pre-format it scrubbed
            record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    logging.setLogRecordFactory(factory)


def load_credentials() -> Optional[Credentials]:
    """Credentials from the mounted Secret dir if there is one; None lets boto3's default chain decide.

    Secrets found in the environment are registered for scrubbing too.
    """
    for name in _FILES:
        register_secret(os.environ.get(name))
    directory = os.environ.get(CREDENTIALS_DIR_ENV) or (
        DEFAULT_CREDENTIALS_DIR if os.path.isdir(DEFAULT_CREDENTIALS_DIR) else None)
    if not directory:
        return None
    values: dict[str, Optional[str]] = {}
    for name in _FILES:
        path = Path(directory) / name
        values[name] = path.read_text(encoding="utf-8").strip() if path.is_file() else None
        register_secret(values[name])
    if not values["AWS_ACCESS_KEY_ID"] or not values["AWS_SECRET_ACCESS_KEY"]:
        # No path in the message beyond the directory: file contents are never echoed.
        raise _missing(directory)
    return Credentials(values["AWS_ACCESS_KEY_ID"] or "", values["AWS_SECRET_ACCESS_KEY"] or "",
                       values["AWS_SESSION_TOKEN"])


def _missing(directory: str) -> Exception:
    from .errors import StorageError

    return StorageError(f"credentials dir {directory} lacks AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY")
