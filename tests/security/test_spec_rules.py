"""Issue 15 items 2 and 7: specs that cannot work on a cluster, and specs outside the admin's policy, are
refused with the field and the rule; the planner turns the refusal into SpecValid=False."""

from __future__ import annotations

import copy

import pytest
from children_common import NOW, example

from cpt_core.tenancy import TenantPolicy
from cpt_core.validation import SpecError, validate_resource
from cpt_operator.planner import Observed, plan

DIGEST = "sha256:" + "b" * 64


def _set(path: str, value):
    def mutate(doc):
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value
    return mutate


REFUSED = {
    "run name starts with a digit": (_set("metadata.name", "7tasks"), "metadata.name", "start with a letter"),
    "image reference invalid": (_set("spec.learner.image", "Registry/UPPER:tag"), "spec.learner.image",
                                "not a valid image reference"),
    "image with :latest": (_set("spec.rollout.image", "ghcr.io/cpt-operator/rollout:latest"), "spec.rollout.image",
                           "other than latest"),
    "image without tag": (_set("spec.learner.image", "ghcr.io/cpt-operator/learner"), "spec.learner.image",
                          "other than latest"),
    "cpu 0": (_set("spec.learner.cpu", "0"), "spec.learner.cpu", "above zero"),
    "cpu 0m": (_set("spec.learner.cpu", "0m"), "spec.learner.cpu", "above zero"),
    "memory 0": (_set("spec.learner.memory", "0Gi"), "spec.learner.memory", "above zero"),
    "int above int64": (_set("spec.grpo.maxSteps", 2**63), "spec.grpo.maxSteps", "64 bits"),
    "local model path": (_set("spec.model", "/models/qwen"), "spec.model", "s3:// URI on a cluster"),
    "local dataset path": (_set("spec.tasks.0.train", "data/train.jsonl"), "spec.tasks[0].train", "s3:// URI"),
    "file:// benchmark": (_set("spec.general.0.eval", "file:///data/eval.jsonl"), "spec.general[0].eval", "s3://"),
    "vllm with 0 GPUs": (_set("spec.rollout.gpus", 0), "spec.rollout.gpus", "at least 1 GPU"),
    "stage ConfigMap over 1 MiB": (_set("spec.tasks.0.answerPattern", "(" + "a" * 1_100_000 + ")"), "spec:",
                                   "1 MiB"),
    "password in endpoint": (_set("spec.storage.endpoint", "http://u:p@minio:9000"), "spec.storage.endpoint",
                             "user info"),
    "builtins:exec reward": (_set("spec.tasks.0.reward", "builtins:exec"), "spec.tasks[0].reward", "never be a reward"),
    "os:system reward": (_set("spec.general.0.reward", "os:system"), "spec.general[0].reward", "never be a reward"),
    "subprocess reward": (_set("spec.tasks.1.reward", "subprocess:run"), "spec.tasks[1].reward", "never be a reward"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_specs_that_cannot_work_are_refused_with_field_and_rule(case):
    mutate, field, rule = REFUSED[case]
    doc = example("rif-grpo")
    validate_resource(doc, policy=TenantPolicy())  # the example itself is fine
    mutate(doc)
    with pytest.raises(SpecError) as err:
        validate_resource(doc, policy=TenantPolicy())
    assert any(p.startswith(field) and rule in p for p in err.value.problems), err.value.problems


@pytest.mark.parametrize("mutate", [
    _set("spec.storage.secretRef", "s3.credentials"),                      # a valid Secret name with a dot
    _set("spec.learner.image", f"registry.example.com:5000/team/learner@{DIGEST}"),
    _set("spec.rollout.image", "localhost:5000/rollout:v1.2"),
    _set("spec.learner.cpu", "500m"),
    _set("spec.grpo.maxSteps", 2**63 - 1),
    _set("spec.method", "sft"),                                            # sft needs no rollout GPUs
])
def test_specs_that_work_are_accepted(mutate):
    doc = example("rif-grpo")
    mutate(doc)
    if doc["spec"]["method"] == "sft":
        doc["spec"].pop("rif")
        doc["spec"]["rollout"]["gpus"] = 0
    validate_resource(doc, policy=TenantPolicy())


def test_local_runs_keep_local_paths():
    doc = example("sft")
    doc["spec"].update(model="models/base", storage={"uri": "runs/x"})
    for t in doc["spec"]["tasks"]:
        t.update(train="data/t.jsonl", eval="data/e.jsonl")
    doc["spec"]["general"] = []
    validate_resource(doc, "local")


POLICY = TenantPolicy(images=("ghcr.io/cpt-operator/",), require_digest=True, reward_modules=("team_rewards",))


@pytest.mark.parametrize("mutate, field, rule", [
    (_set("spec.learner.image", f"docker.io/evil/miner@{DIGEST}"), "spec.learner.image", "policy.allowedImages"),
    (_set("spec.rollout.image", f"ghcr.io/cpt-operator-evil/x@{DIGEST}"), "spec.rollout.image", "allowedImages"),
    (_set("spec.learner.image", "ghcr.io/cpt-operator/learner:0.2.0"), "spec.learner.image", "policy.requireDigest"),
    (_set("spec.tasks.0.reward", "other_team:score"), "spec.tasks[0].reward", "policy.allowedRewardModules"),
    (_set("spec.tasks.0.reward", "team_rewards_evil:score"), "spec.tasks[0].reward", "allowedRewardModules"),
])
def test_the_admins_policy_refuses_what_it_does_not_allow(mutate, field, rule):
    doc = example("rif-grpo")
    mutate(doc)
    with pytest.raises(SpecError) as err:
        validate_resource(doc, policy=POLICY)
    assert any(p.startswith(field) and rule in p for p in err.value.problems), err.value.problems


def test_the_admins_policy_allows_what_it_names():
    doc = example("rif-grpo")
    doc["spec"]["learner"]["image"] = f"ghcr.io/cpt-operator/learner@{DIGEST}"
    doc["spec"]["tasks"][0]["reward"] = "team_rewards.math:score"
    validate_resource(doc, policy=POLICY)
    doc["spec"]["storage"].pop("secretRef")  # (a local rule)
    validate_resource(doc, "local", policy=POLICY)
    doc["spec"]["tasks"][0]["reward"] = "other:score"
    validate_resource(doc, "local")  # a local run is the user's own machine: only the never-allowed list applies


def test_policy_from_the_operators_environment_becomes_a_condition(monkeypatch):
    """The chart renders the policy into the operator's env; the planner's refusal names the rule."""
    monkeypatch.setenv("CPT_ALLOWED_IMAGES", "ghcr.io/cpt-operator/")
    monkeypatch.setenv("CPT_ALLOWED_REWARD_MODULES", "")
    doc = example("rif-grpo")
    doc["spec"]["learner"]["image"] = "docker.io/evil/miner:1.0"
    doc["spec"]["tasks"][0]["reward"] = "my_rewards:score"
    p = plan(copy.deepcopy(doc), Observed(now=NOW))
    assert not p.valid and p.spec is None
    (valid,) = [c for c in p.status["conditions"] if c["type"] == "SpecValid"]
    assert valid["status"] == "False"
    assert "spec.learner.image" in valid["message"] and "policy.allowedImages" in valid["message"]
    assert "spec.tasks[0].reward" in valid["message"] and "built-in rewards only" in valid["message"]
