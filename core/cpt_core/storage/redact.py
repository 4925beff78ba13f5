"""Keeping secrets out of logs and exception messages.

Every secret the process loads is registered with `register_secret`: `scrub` replaces it in any text, and a
log-record factory (installed once, chained to the previous one) scrubs every log record of the process,
botocore's debug logs included. Imports nothing else of the storage package, so its errors can use it.
"""

from __future__ import annotations

import base64
import logging
import threading
import traceback
from typing import Optional
from urllib.parse import quote, quote_plus

REDACTED = "***"

_lock = threading.Lock()
_secrets: set[str] = set()
_factory_installed = False


def encoded_forms(value: str) -> set[str]:
    """The forms a secret takes on its way into a URL, a header or a config dump: as is, percent-encoded (both
    styles), and base64 (standard and URL-safe, with and without padding)."""
    raw = value.encode()
    forms = {value, quote(value, safe=""), quote_plus(value, safe="")}
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode()
        forms |= {text, text.rstrip("=")}
    return {f for f in forms if len(f) >= 4}


def register_secret(value: Optional[str]) -> None:
    """Remember a secret (in every encoded form) so `scrub` and the log-record factory redact it from now on."""
    global _factory_installed
    if not value or len(value) < 4:
        return
    with _lock:
        _secrets.update(encoded_forms(value))
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
