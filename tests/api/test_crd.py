"""The CRD and the pydantic models cannot drift: the committed CRD is the generator's output, and resources
that the models accept (or reject) are accepted (or rejected) by the CRD's schema too."""

import copy
from pathlib import Path

import pytest
import yaml

from cpt_core import api
from cpt_operator.kube import crdgen
from cpt_core.results import CommittedTask
from cpt_operator.planner.observed import Observed
from cpt_operator.planner import plan, task_spec_hash
from cpt_core.validation import validate_resource

from crdschema import crd_validator

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crd_is_generated_from_models():
    committed = (ROOT / "crds" / "continualposttraining.yaml").read_text()
    assert committed == crdgen.render(), "run: python -m cpt_operator.kube.crdgen > crds/continualposttraining.yaml"


def test_crd_identity(crd):
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "continualposttrainings.cpt.dev"
    assert spec["group"] == "cpt.dev" and spec["names"]["kind"] == "ContinualPostTraining"
    assert spec["names"]["plural"] == "continualposttrainings" and spec["names"]["shortNames"] == ["cpt"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Task"] == ".status.progress"
    assert columns["AvgAcc"] == ".status.averageAccuracy"
    assert columns["Forgetting"] == ".status.forgetting"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_crd_schema_rules(crd):
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    assert set(spec["required"]) >= {"model", "tasks", "storage"}
    tasks = spec["properties"]["tasks"]
    assert tasks["minItems"] == 1
    assert tasks["items"]["properties"]["name"]["pattern"] == api.DNS_LABEL
    assert spec["properties"]["method"]["enum"] == ["sft", "grpo", "rif-grpo", "self-sft"]
    assert spec["properties"]["grpo"]["properties"]["groupSize"]["minimum"] == 2
    lr = spec["properties"]["grpo"]["properties"]["learningRate"]
    assert lr["minimum"] == 0 and lr["exclusiveMinimum"] is True
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert set(conditions["items"]["required"]) >= {"type", "status", "reason", "lastTransitionTime"}


def test_every_model_field_is_in_the_crd(crd):
    """Walk the models and the schema together: same field names at every level."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]

    def walk(model, node, path):
        wire = {f.alias or n for n, f in model.model_fields.items()}
        assert wire == set(node["properties"]), path
        for name, field in model.model_fields.items():
            inner = _model_of(field.annotation)
            if inner is not None:
                child = node["properties"][field.alias or name]
                walk(inner, child.get("items", child), f"{path}.{field.alias or name}")

    walk(api.CptSpec, schema["spec"], "spec")
    walk(api.CptStatus, schema["status"], "status")


def _model_of(annotation):
    import typing

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def test_examples_validate_against_models_and_crd(crd):
    validator = crd_validator(crd)
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            mode = "cluster" if doc["spec"]["storage"]["uri"].startswith("s3://") else "local"
            validate_resource(doc, mode)
            errors = list(validator.iter_errors(doc))
            assert not errors, f"{path.name}: {[e.message for e in errors]}"


BAD = [
    ("tasks", []),
    ("method", "ppo"),
    ("grpo", {"groupSize": 1}),
    ("grpo", {"learningRate": 0}),
    ("grpo", {"groupSzie": 4}),
    ("forgetting", {"maxDrop": 2}),
    ("storage", {"endpoint": "x"}),
]


@pytest.mark.parametrize("key,value", BAD)
def test_crd_schema_rejects_what_models_reject(crd, resource, key, value):
    validator = crd_validator(crd)
    bad = copy.deepcopy(resource)
    bad["spec"][key] = value
    assert list(validator.iter_errors(bad)), f"CRD schema accepted spec.{key}={value!r}"


def test_planner_status_validates_against_crd(crd, resource):
    """The status the planner writes must survive the strict status schema (kopf's own fields kept out)."""
    from datetime import datetime, timezone

    validator = crd_validator(crd)
    spec = validate_resource(resource).spec
    committed = {
        0: CommittedTask(0, "base", task_spec_hash(spec, 0), {"tasks": {"add": 0.2}, "general": {"copy": 0.9}}),
        1: CommittedTask(1, "add", task_spec_hash(spec, 1), {"tasks": {"add": 0.7}, "general": {"copy": 0.8}},
                           rif={"kept": 6, "dropped": 4, "filtered_fraction": 0.4}, checkpoint="tasks/1-add/checkpoint"),
    }
    result = plan(resource, Observed(now=datetime(2026, 1, 1, tzinfo=timezone.utc), committed=committed))
    doc = {**resource, "status": result.status}
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert not errors, errors
