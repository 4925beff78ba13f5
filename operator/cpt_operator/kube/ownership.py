"""Proof that a child is this operator's own: a mark only the holder of the operator's key can compute.

An ownerReference is no proof: anyone who may create a ConfigMap in a namespace can write a run's uid into one,
and a planted stage ConfigMap (other storage, another reward module), an allow-all NetworkPolicy or a rollout-key
Secret holding a token of the planter's choosing would then be adopted and used. So every child the operator
creates carries the annotation `cpt.dev/mark`: an HMAC-SHA256, keyed by a secret only the operator holds, of the
child's kind, namespace, name, the run's uid and a digest of what a planted copy would use against the run (our
labels; a ConfigMap's or Secret's data; a NetworkPolicy's spec). A child whose mark does not verify is foreign,
whether a create answered 409 or a watch delivered it.

The key: CPT_CHILD_KEY (the chart keeps a random one in a Secret), else the file named by CPT_CHILD_KEY_FILE
(default ~/.config/cpt-operator/child-key, created with a random key on first use: a dev machine's operator,
restarted, still recognises its children).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from cpt_core import api

MARK = f"{api.GROUP}/mark"
DIGEST = "cptContentDigest"  # in slim copies (observe.slim_child): the digest, taken while the full object was seen
KEY_ENV = "CPT_CHILD_KEY"
KEY_FILE_ENV = "CPT_CHILD_KEY_FILE"
MIN_KEY_CHARS = 32


class ChildKeyError(ValueError):
    """The operator's key is missing, too short or unreadable (named, with what to do)."""


def default_key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "cpt-operator" / "child-key"


def load_key(env: Mapping[str, str]) -> bytes:
    """The operator's mark key from `env` (CPT_CHILD_KEY, else the key file, created if missing)."""
    raw = (env.get(KEY_ENV) or "").strip()
    if raw:
        if len(raw) < MIN_KEY_CHARS:
            raise ChildKeyError(f"{KEY_ENV} must be at least {MIN_KEY_CHARS} characters (a random string)")
        return raw.encode()
    path = Path(env.get(KEY_FILE_ENV) or default_key_file())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48) + "\n")
        text = path.read_text().strip()
    except OSError as exc:
        raise ChildKeyError(f"cannot read or create the child key file {path} ({exc.strerror}): set {KEY_ENV} to a "
                        f"random string of {MIN_KEY_CHARS}+ characters, or {KEY_FILE_ENV} to a writable path") \
            from None
    if len(text) < MIN_KEY_CHARS:
        raise ChildKeyError(f"the child key file {path} holds fewer than {MIN_KEY_CHARS} characters")
    return text.encode()


@functools.lru_cache(maxsize=1)
def default_key() -> bytes:
    """This process's key from its environment (read once)."""
    return load_key(os.environ)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _pruned(value: Any) -> Any:
    """A NetworkPolicy spec without empty parts and with the API server's defaults made explicit (TCP), so the
    server's copy digests like the one we sent."""
    if isinstance(value, dict):
        out = {k: _pruned(v) for k, v in value.items()}
        if "port" in out and "protocol" not in out:
            out["protocol"] = "TCP"
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _secret_data(obj: dict) -> dict:
    data = {}
    for k, v in (obj.get("data") or {}).items():
        try:
            data[k] = base64.b64decode(v).decode()
        except (ValueError, UnicodeDecodeError):
            data[k] = f"<undecodable {v!r}>"
    data.update(obj.get("stringData") or {})  # what the server does: stringData wins
    return data


def content_digest(obj: Any) -> str:
    """sha256 of the child's content that matters to the run: our labels, and a ConfigMap's or Secret's data or
    a NetworkPolicy's spec (fields the server keeps as sent). Slim copies carry it precomputed."""
    obj = _plain(obj)
    if obj.get(DIGEST):
        return obj[DIGEST]
    labels = (obj.get("metadata") or {}).get("labels") or {}
    ours = {k: v for k, v in labels.items() if k.startswith(f"{api.GROUP}/")}
    kind = obj.get("kind")
    content: Any = None
    if kind == "ConfigMap":
        content = obj.get("data") or {}
    elif kind == "Secret":
        content = _secret_data(obj)
    elif kind == "NetworkPolicy":
        content = _pruned(obj.get("spec") or {})
    body = json.dumps({"labels": ours, "content": content}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def mark(key: bytes, obj: Any, run_uid: str) -> str:
    meta = obj.get("metadata") or {}
    message = "\n".join([obj.get("kind") or "", meta.get("namespace") or "", meta.get("name") or "", run_uid,
                         content_digest(obj)])
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def sign(key: bytes, obj: dict, run_uid: str) -> dict:
    """`obj` (a child about to be created) with its mark; `obj` itself is not changed."""
    meta = dict(obj["metadata"])
    meta["annotations"] = {**(meta.get("annotations") or {}), MARK: mark(key, obj, run_uid)}
    return {**obj, "metadata": meta}


def proven(key: bytes, obj: Any, run_uid: Optional[str]) -> bool:
    """Does `obj` (full, or a slim copy with its digest) carry this run's valid mark?"""
    if not run_uid:
        return False
    given = ((obj.get("metadata") or {}).get("annotations") or {}).get(MARK)
    return isinstance(given, str) and hmac.compare_digest(given, mark(key, obj, run_uid))


def owned_by(obj: dict, uid: Optional[str]) -> bool:
    """Children of an earlier resource with the same name (awaiting garbage collection) are not ours."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return uid is None or any(ref.get("uid") == uid for ref in refs)
