"""A local run's resource file and where its state lives (the runner, `cpt status` and the report read these)."""

from __future__ import annotations

from pathlib import Path

from cpt_core.api import CptSpec
from cpt_core.resource_file import read_one
from cpt_core.validation import validate_resource
from cpt_operator.local.preflight import resolve_paths

LOCAL_NAMESPACE = "local"
LOCAL_STATE_DIR = ".cpt-local"  # under a local storage folder: the live status, stage configs and logs
STATUS_FILE = "status.json"


def load_resource(path: str) -> tuple[dict, CptSpec]:
    """Read, resolve the storage path against the file, validate for a local run (SpecError if not)."""
    doc = read_one(path)
    doc = resolve_paths(doc, Path(path).resolve().parent) if isinstance(doc, dict) else doc
    resource = validate_resource(doc, mode="local")
    doc.setdefault("metadata", {})["namespace"] = LOCAL_NAMESPACE
    # The owner marker's identity of a local run (cpt_core.storage.owner): its name, so a rerun is the same run
    # and a cluster run or another local run on the same storage is not.
    doc["metadata"].setdefault("uid", f"local-{doc['metadata'].get('name')}")
    doc["spec"] = resource.spec.wire()
    return doc, resource.spec
