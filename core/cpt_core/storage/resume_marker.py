"""A train stage that resumed from a step checkpoint says so in storage while it runs (`tasks/<i>-<name>/resume.json`).

The stage's result (train.json) says it too, but only once the task commits, which on the target setting is
hours later. The operator lists tasks/ on every pass anyway, so the marker costs it one small GET when it
appears, and status shows "resumed at step k of n" while the retried stage trains. The stage writes it (rank 0,
best effort: it is status only); readers treat it as tenant data: a marker that does not parse is ignored.
"""

from __future__ import annotations

import json
import logging
from typing import Iterable

from cpt_core import layout
from cpt_core.results import ResumeMarker, parse_marker
from cpt_core.storage.base import Store
from cpt_core.storage.errors import NotFound

log = logging.getLogger(__name__)


def write_marker(store: Store, index: int, name: str, marker: ResumeMarker) -> None:
    store.put_json(layout.task_key(index, name, layout.RESUME), marker.record())


def read_markers(store: Store, keys: Iterable[str], tasks: Iterable[tuple[int, str]]) -> dict[int, ResumeMarker]:
    """The markers among `keys` (a listing of tasks/ already made) of the given (index, name) tasks: one GET
    each, no listing. Only those tasks are read, so a prefix full of markers costs no more than the spec's tasks."""
    present = set(keys)
    out: dict[int, ResumeMarker] = {}
    for index, name in tasks:
        key = layout.task_key(index, name, layout.RESUME)
        if key not in present:
            continue
        try:
            data = store.get_bytes(key)
        except NotFound:  # deleted since the listing (the task's first stage reset its folder)
            continue
        try:
            marker = parse_marker(json.loads(data))
        except ValueError:
            marker = None
        if marker is None:
            log.warning("%s is not a resume marker; ignored", key)
        else:
            out[index] = marker
    return out
