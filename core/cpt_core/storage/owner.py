"""Which run owns a storage prefix: a marker (`owner.json`, the resource's uid) written before anything else.

Two resources with the same storage.uri (a copy-paste, a re-created run, another namespace) would otherwise
read, adopt and delete each other's tasks. The first run to claim a prefix owns it; any other one is refused
and touches nothing there. Every writer checks it: the operator on a run's first pass, each stage process before
it prepares or writes a task, and `cpt run` before it starts. A prefix that holds tasks but no marker (written
before markers existed) is adopted by the first run that claims it (the caller, which lists the prefix, says so
in a log line).

A refusal names nobody: the marker's namespace, name and uid belong to another tenant. A deleted run's prefix
is taken over by a new run in the same namespace that carries the annotation `cpt.dev/adopt-prefix: "true"`;
the caller decides (`may_adopt`) whether the marker's run is really gone from that namespace.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Callable, Optional

from cpt_core import layout
from cpt_core.api import GROUP
from cpt_core.storage.base import Store, dump_json
from cpt_core.storage.errors import NotFound, StorageError

OWNER = "owner.json"
ADOPT_ANNOTATION = f"{GROUP}/adopt-prefix"
MAX_MODEL_DEPTH = 4  # run roots (prefixes before a tasks/ segment) looked at in a model URI


def claim(store: Store, uid: str, namespace: str, name: str, listed: Optional[bool] = None,
          may_adopt: Optional[Callable[[dict], bool]] = None) -> tuple[Optional[str], bool]:
    """(None, True): this call wrote the marker; (None, False): it was ours already; (why, False): not ours.

    The write comes first (a conditional put, refused when the marker exists), so a fresh prefix costs one
    check and one write, and the marker is read only when it exists. `listed`: whether a listing the caller
    just made showed the marker (True: it is read, nothing written; False: the conditional put without its
    own check; None: not listed). `may_adopt(marker)`: None when the run did not ask to adopt a deleted run's
    prefix, else whether the marker's run is gone from this run's namespace (then the marker is rewritten)."""
    mine = {"uid": uid, "namespace": namespace, "name": name}
    body = dict(mine, claimed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if not listed and store.put_if_absent(OWNER, dump_json(body), seen_absent=listed is False):
        return None, True
    current = _owner(store)
    if current is None and listed:  # deleted since the listing: claimed as if it had not been listed
        return claim(store, uid, namespace, name, may_adopt=may_adopt)
    if current is not None and current.get("uid") == uid:
        return None, False
    if may_adopt is not None and current and may_adopt(current):
        store.put_bytes(OWNER, dump_json(dict(body, adopted_from=current.get("uid"))))
        again = _owner(store)  # two runs adopting at once: the last write wins, the other is refused
        if again is not None and again.get("uid") == uid:
            return None, True
    return refusal(store.uri, adopt_asked=may_adopt is not None), False


def refusal(uri: str, adopt_asked: bool = False) -> str:
    """Why a run may not use `uri`, without a word about the run that owns it (another tenant's)."""
    head = f"{uri} belongs to another run (its {OWNER} names another owner); nothing was read, started or deleted there"
    if adopt_asked:
        return (f"{head}. The annotation {ADOPT_ANNOTATION} asks to take it over, which is allowed only for a run "
                "of this namespace that has been deleted: give this resource its own spec.storage.uri")
    return (f"{head}. Give this resource its own spec.storage.uri; if the run that used it was in this namespace "
            f"and has been deleted, annotate this resource {ADOPT_ANNOTATION}=\"true\" to take over its results")


def check(store: Store, uid: Optional[str], namespace: str, name: str) -> Optional[str]:
    """For a writer that is not the operator (a stage process, `cpt run`): None when the prefix is this run's
    (claimed now if it had no marker), else why not. No uid (a hand-written stage config): nothing checked."""
    if not uid:
        return None
    return claim(store, uid, namespace, name)[0]


def model_conflict(open_prefix: Callable[[str], Store], model_uri: str, uid: str) -> Optional[str]:
    """Why the base model at `model_uri` may not be used: it is a checkpoint of another run (the URI runs
    through a run's `tasks/` and that run's root holds an `owner.json` of another uid), or None. A base model
    outside any run's tasks costs no request; a root that cannot be read (no permission) says nothing."""
    if not model_uri.startswith("s3://"):
        return None
    bucket, _, path = model_uri[len("s3://"):].partition("/")
    parts = [p for p in path.split("/") if p]
    roots = [i for i, part in enumerate(parts) if part == layout.TASKS][:MAX_MODEL_DEPTH]
    for depth in reversed(roots):  # the nearest run root first
        prefix = f"s3://{bucket}/" + "/".join(parts[:depth])
        try:
            raw = open_prefix(prefix.rstrip("/")).get_bytes(OWNER)
        except NotFound:
            continue
        except StorageError as exc:
            if exc.transient:
                raise
            continue  # not ours to read (another bucket's policy): no marker seen
        try:
            current = json.loads(raw)
        except ValueError:
            current = {}
        if isinstance(current, dict) and current.get("uid") == uid:
            return None
        return (f"spec.model {model_uri} is a checkpoint of another run (under {prefix.rstrip('/')}, whose "
                f"{OWNER} names another owner); start from a model outside other runs' storage, or from this "
                "run's own")
    return None


def _owner(store: Store) -> Optional[dict]:
    try:
        data = store.get_json(OWNER)
    except NotFound:
        return None
    except StorageError as exc:
        if exc.transient:
            raise
        return {}  # present but not JSON: nobody may adopt it silently
    return data if isinstance(data, dict) else {}
