"""The planner's golden-file harness (tests/api/test_planner*.py): committed tasks and jobs as the executors observe
them, a plan rendered as Kubernetes children with a fixed operator key, and the comparison with tests/api/golden/
(regenerate after an intended change with CPT_UPDATE_GOLDEN=1 and review the diff)."""

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from cpt_core.results import CommittedTask
from cpt_core.validation import validate_resource
from cpt_operator.kube.children import render
from cpt_operator.kube.defaults import PlanDefaults
from cpt_operator.planner import ObservedJob, Plan, task_spec_hash
from cpt_operator.planner import plan as plan_intents

GOLDEN = Path(__file__).resolve().parents[1] / "api" / "golden"
NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)


def committed(resource, index, tasks, general=None, rif=None, train=None):
    spec = validate_resource(resource).spec
    names = ["base"] + [t.name for t in spec.tasks]
    return CommittedTask(index, names[index], task_spec_hash(spec, index),
                           {"tasks": tasks, "general": general or {}}, rif=rif, train=train,
                           checkpoint=None if index == 0 else f"tasks/{index}-{names[index]}/checkpoint")


def job(name, index, stage, phase, attempt=0, finished=None, message="", suspended=False):
    return ObservedJob(name, index, stage, attempt, phase, finished, message, suspended)


@dataclass
class KubePlan:
    """The planner's intents and their rendering as Kubernetes children (what the golden files record)."""

    intents: Plan
    create: list
    patch: list
    delete: list

    def __getattr__(self, name):
        return getattr(self.intents, name)


# The operator's key (kube.ownership) fixes the private child names' suffixes: one for the golden files.
GOLDEN_DEFAULTS = PlanDefaults(child_key=b"golden-files-key-" + b"0" * 32)


def plan(resource, observed, children=()):
    p = plan_intents(resource, observed)
    c = render(p, resource, children, GOLDEN_DEFAULTS)
    return KubePlan(p, c.create, c.patch, c.delete)


def summary(p):
    """What a golden file records: the plan minus the bulky manifest bodies (checked separately)."""
    return {
        "create": [f"{o['kind']}/{o['metadata']['name']}" for o in p.create],
        "patch": [[f"{r.kind}/{r.name}", body] for r, body in p.patch],
        "delete": [f"{r.kind}/{r.name}" for r in p.delete],
        "events": [[e.type, e.reason, e.message] for e in p.events],
        "requeue_after": p.requeue_after,
        "valid": p.valid,
        "status": p.status,
    }


def check_golden(name, p):
    path = GOLDEN / f"{name}.yaml"
    got = summary(p)
    if os.environ.get("CPT_UPDATE_GOLDEN") or not path.exists():
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(got, sort_keys=False, width=120))
        if not os.environ.get("CPT_UPDATE_GOLDEN"):
            pytest.fail(f"golden file {path.name} was missing and has been written; review it and rerun")
    assert got == yaml.safe_load(path.read_text())
    return got


def three_stage(resource):
    """rif-grpo in the paper's mode: these goldens walk the three-stage task (filter, train, evaluate); online RIF
    (no filter stage) is planned in test_planner_rollout.py."""
    resource["spec"]["rif"] = {"mode": "prefilter"}
    return resource


def base_committed(resource):
    return {0: committed(resource, 0, {"add": 0.3, "reverse": 0.2, "sort": 0.4}, {"copy": 0.9})}
