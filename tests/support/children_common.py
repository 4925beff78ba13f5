"""Every child the planner + kube/children emit for a resource, over the states that create something.

The planner walked from nothing committed (the base evaluation) to the base committed (task 1's first stage and,
for GRPO methods, its rollout servers), and each stage's job built from that stage config, for every method.
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from pathlib import Path

import yaml

from cpt_core.api import STAGES
from cpt_core.results import CommittedTask
from cpt_core.validation import validate_resource
from cpt_operator.kube import manifests
from cpt_operator.kube.children import render
from cpt_operator.kube.defaults import PlanDefaults
from cpt_operator.planner import Observed, plan, task_spec_hash

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)
METHODS = ("sft", "grpo", "rif-grpo")


def example(method: str = "rif-grpo", name: str = "seven-tasks", namespace: str = "research") -> dict:
    """examples/cpt.yaml as the API server returns it (uid, generation), with `method`."""
    doc = yaml.safe_load((ROOT / "examples" / "cpt.yaml").read_text())
    doc = copy.deepcopy(doc)
    doc["metadata"].update(name=name, namespace=namespace, uid=f"uid-{name}", generation=1)
    doc["spec"]["method"] = method
    if method != "rif-grpo":
        doc["spec"].pop("rif", None)
    return doc


def base_committed(resource: dict) -> dict[int, CommittedTask]:
    spec = validate_resource(resource).spec
    return {0: CommittedTask(0, "base", task_spec_hash(spec, 0), {"tasks": {}, "general": {}})}


def children(resource: dict, defaults: PlanDefaults = PlanDefaults()) -> list[dict]:
    """Children created at the start and at task 1 (each of its stages), deduplicated by (kind, name)."""
    out: dict[tuple[str, str], dict] = {}
    for committed in ({}, base_committed(resource)):
        p = plan(resource, Observed(now=NOW, committed=committed))
        for obj in render(p, resource, (), defaults).create:
            out[(obj["kind"], obj["metadata"]["name"])] = obj
        for start in p.start:
            for stage in STAGES:
                cfg = start.config.model_copy(update={"stage": stage})
                job = manifests.pytorchjob(resource, f"{start.job}-{stage}", cfg, defaults)
                out[(job["kind"], job["metadata"]["name"])] = job
    return list(out.values())
