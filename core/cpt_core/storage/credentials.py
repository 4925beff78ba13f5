"""Where S3 credentials come from.

Order: a mounted Secret directory (env CPT_S3_CREDENTIALS_DIR, or DEFAULT_CREDENTIALS_DIR if it exists) holding
files AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY [/ AWS_SESSION_TOKEN], else boto3's default chain (the standard
AWS_* variables, profiles, web identity, instance metadata). Never from the spec. Every secret found is registered
with `scrub.register_secret`, so it never shows in logs or messages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from cpt_core.storage.errors import StorageError
from cpt_core.storage.redact import REDACTED, register_secret, scrub

__all__ = ["Credentials", "load_credentials", "register_secret", "scrub", "CREDENTIALS_DIR_ENV",
           "DEFAULT_CREDENTIALS_DIR"]

CREDENTIALS_DIR_ENV = "CPT_S3_CREDENTIALS_DIR"
DEFAULT_CREDENTIALS_DIR = "/var/run/secrets/cpt-s3"  # where the chart mounts spec.storage.secretRef
_FILES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass(frozen=True)
class Credentials:
    """Explicit credentials; `repr` never shows the values."""

    access_key_id: str
    secret_access_key: str
    session_token: Optional[str] = None

    def __repr__(self) -> str:
        return f"Credentials(access_key_id={REDACTED}, secret_access_key={REDACTED})"


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
    return StorageError(f"credentials dir {directory} lacks AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY")
