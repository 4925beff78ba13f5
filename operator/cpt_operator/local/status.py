"""`cpt status DIR|FILE`: the report of a local run, finished or in progress, plus its live stage if any."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cpt_core.storage import load_committed, open_store, open_store_for_spec
from cpt_operator.local.report import build_report, render_markdown
from cpt_operator.local.resource import LOCAL_STATE_DIR, STATUS_FILE, load_resource


def print_status(target: str) -> int:
    """`cpt status DIR|FILE`: the report of a run, finished or in progress, plus its live stage if any."""
    path = Path(target)
    live: dict = {}
    if path.is_file():
        doc, spec = load_resource(str(path))
        store_uri = spec.storage.uri
        spec_wire = doc["spec"]
    else:
        store_uri = str(path)
        state = path / LOCAL_STATE_DIR / STATUS_FILE
        if not state.is_file():
            print(f"error: {target} is not a local run directory (no {LOCAL_STATE_DIR}/{STATUS_FILE}); "
                  "pass the run's ContinualPostTraining file instead", file=sys.stderr)
            return 2
        live = json.loads(state.read_text())
        spec_wire = live["spec"]
    if path.is_file():
        store = open_store_for_spec(spec.storage)
        state = Path(store_uri) / LOCAL_STATE_DIR / STATUS_FILE if "://" not in store_uri else None
        if state is not None and state.is_file():
            live = json.loads(state.read_text())
    else:
        store = open_store(store_uri)
    report = build_report(spec_wire, load_committed(store), live.get("status"))
    sys.stdout.write(render_markdown(report))
    if live.get("live") and report["phase"] not in ("Succeeded", "Failed"):
        sys.stdout.write(f"\nNow: {live['live']}\n")
    return 0
