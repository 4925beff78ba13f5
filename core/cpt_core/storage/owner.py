"""Which run owns a storage prefix: a marker (`owner.json`, the resource's uid) written before anything else.

Two resources with the same storage.uri (a copy-paste, a re-created run, another namespace) would otherwise
read, adopt and delete each other's tasks. The first run to claim a prefix owns it; any other one is refused
and touches nothing there. A prefix that holds tasks but no marker (written before markers existed) is adopted
by the first run that claims it (the caller, which lists the prefix, says so in a log line).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from cpt_core.storage.base import Store, dump_json
from cpt_core.storage.errors import NotFound, StorageError

OWNER = "owner.json"


def claim(store: Store, uid: str, namespace: str, name: str,
          listed: Optional[bool] = None) -> tuple[Optional[str], bool]:
    """(None, True): this call wrote the marker; (None, False): it was ours already; (why, False): not ours.

    The write comes first (a conditional put, refused when the marker exists), so a fresh prefix costs one
    check and one write, and the marker is read only when it exists. `listed`: whether a listing the caller
    just made showed the marker (True: it is read, nothing written; False: the conditional put without its
    own check; None: not listed). The caller says whether a prefix it just claimed already held tasks
    (written before markers existed: adopted, with a log line)."""
    mine = {"uid": uid, "namespace": namespace, "name": name}
    body = dict(mine, claimed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    if not listed and store.put_if_absent(OWNER, dump_json(body), seen_absent=listed is False):
        return None, True
    current = _owner(store)
    if current is None and listed:  # deleted since the listing: claimed as if it had not been listed
        return claim(store, uid, namespace, name)
    if current is not None and current.get("uid") == uid:
        return None, False
    who = (f"{current.get('namespace')}/{current.get('name')} (uid {current.get('uid')})" if current
           else "an unreadable owner marker")
    return (f"{store.uri} belongs to run {who}, not to this one (uid {uid}); nothing was read, started or "
            "deleted there. Give this resource its own spec.storage.uri (or delete "
            f"{store.uri}/{OWNER} if the other run is gone and its results should be adopted)"), False


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
