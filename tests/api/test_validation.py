"""Every validation rule: bad input -> an error that names the field and the rule."""

import copy

import pytest

from cpt_core.validation import SpecError, validate_resource


def _set(obj: dict, path: str, value):
    keys = path.split(".")
    for key in keys[:-1]:
        obj = obj[int(key)] if key.isdigit() else obj.setdefault(key, {})
    if keys[-1].isdigit():
        obj[int(keys[-1])] = value
    else:
        obj[keys[-1]] = value


def test_valid_resource_passes(resource):
    cpt = validate_resource(resource)
    assert cpt.spec.tasks[0].reward == "numeric"
    assert cpt.spec.grpo.group_size == 8  # defaults filled in
    assert cpt.spec.rif_effective.rollouts == 8


CASES = [
    ("spec.tasks", [], "spec.tasks", "at least 1"),
    ("spec.tasks.1.name", "add", "spec.tasks[1].name", "duplicate name 'add'"),
    ("spec.method", "ppo", "spec.method", "'sft', 'grpo', 'rif-grpo' or 'self-sft'"),
    ("spec.grpo", {"groupSize": 1}, "spec.grpo.groupSize", "greater than or equal to 2"),
    ("spec.grpo", {"learningRate": 0}, "spec.grpo.learningRate", "greater than 0"),
    ("spec.rif", {"rollouts": 4, "minCorrect": 5}, "spec.rif.minCorrect", "<= spec.rif.rollouts"),
    ("spec.rif", {"mode": "offline"}, "spec.rif.mode", "'prefilter' or 'online'"),
    ("spec.rif", {"mode": "online", "reprobe": 0}, "spec.rif.reprobe", "greater than 0"),
    ("spec.rif", {"mode": "online", "reprobe": 0.1, "reprobeFloor": 0.2}, "spec.rif.reprobeFloor",
     "<= spec.rif.reprobe"),
    ("spec.replay", {"fraction": 1}, "spec.replay.fraction", "less than 1"),
    ("spec.replay", {"fraction": -0.1}, "spec.replay.fraction", "greater than or equal to 0"),
    ("spec.replay", {"fraction": 0.001}, "spec.replay.fraction", "rounds to 0 replayed prompts per batch"),
    ("spec.replay", {"fraction": 0.999}, "spec.replay.fraction", "leaves no slot of a batch"),
    ("spec.replay", {"probePrompts": 0}, "spec.replay.probePrompts", "greater than or equal to 1"),
    ("spec.replay", {"fraction": 0.5, "share": 1}, "spec.replay.share", "unknown field 'share'"),
    ("spec.tasks.0.train", "http://example.com/x.jsonl", "spec.tasks[0].train", "must be a URI"),
    ("spec.tasks.0.eval", "s3://x/y", "spec.tasks[0].eval", "valid bucket name"),
    ("spec.storage.endpoint", "minio:9000", "spec.storage.endpoint", "http:// or https://"),
    ("spec.tasks.0.name", "Add_Task", "spec.tasks[0].name", "DNS label"),
    ("spec.tasks.0.reward", "my reward", "spec.tasks[0].reward", "built-in reward name"),
    ("spec.tasks.0.answerPattern", "no-group", "spec.tasks[0].answerPattern", "capture group"),
    ("spec.tasks.0.answerPattern", "([unclosed", "spec.tasks[0].answerPattern", "not a valid regular expression"),
    ("spec.forgetting", {"maxDrop": 1.5}, "spec.forgetting.maxDrop", "less than or equal to 1"),
    ("spec.forgetting", {"onRegression": "stop"}, "spec.forgetting.onRegression", "'alert' or 'pause'"),
    ("spec.learner", {"zeroStage": 4}, "spec.learner.zeroStage", "less than or equal to 3"),
    ("spec.rollout", {"gpus": 1, "tensorParallel": 2}, "spec.rollout.tensorParallel", "<= spec.rollout.gpus"),
    ("spec.storage", {"uri": "/tmp/run"}, "spec.storage.uri", "s3:// URI on a cluster"),
    ("spec.storage", {}, "spec.storage.uri", "required field is missing"),
    ("spec.retry", {"limit": -1}, "spec.retry.limit", "greater than or equal to 0"),
    ("metadata.name", "Bad_Name", "metadata.name", "DNS label"),
    ("spec.evaluation", {"engine": "sglang"}, "spec.evaluation.engine", "'hf' or 'vllm'"),
    ("spec.evaluation", {"engine": "vllm", "everySteps": 5}, "spec.evaluation.everySteps", "two engines"),
]


@pytest.mark.parametrize("path,value,field,rule", CASES, ids=[c[2] + ":" + c[3][:20] for c in CASES])
def test_bad_input_names_field_and_rule(resource, path, value, field, rule):
    _set(resource, path, value)
    with pytest.raises(SpecError) as err:
        validate_resource(resource)
    text = str(err.value)
    assert f"{field}:" in text, text
    assert rule in text, text


def test_vllm_evaluation_needs_rollout_gpus_even_for_sft(resource):
    resource["spec"]["method"] = "sft"
    resource["spec"]["rollout"] = {"gpus": 0}
    validate_resource(resource)  # SFT scored by hf: no rollout servers, no GPUs needed for them
    resource["spec"]["evaluation"] = {"engine": "vllm"}
    with pytest.raises(SpecError, match=r"spec.rollout.gpus: vLLM rollout servers need at least 1 GPU"):
        validate_resource(resource)


def test_rif_block_with_sft_is_rejected(resource):
    resource["spec"]["method"] = "sft"
    resource["spec"]["rif"] = {"rollouts": 8}
    with pytest.raises(SpecError, match=r"spec.rif: a rif block is only allowed with method rif-grpo"):
        validate_resource(resource)


def test_misspelled_field_gets_a_suggestion(resource):
    resource["spec"]["grpo"] = {"groupSzie": 4}
    resource["spec"]["tasks"][0]["rewrd"] = "exact"
    with pytest.raises(SpecError) as err:
        validate_resource(resource)
    assert "spec.grpo.groupSzie: unknown field 'groupSzie'; did you mean 'groupSize'?" in str(err.value)
    assert "spec.tasks[0].rewrd: unknown field 'rewrd'; did you mean 'reward'?" in str(err.value)


@pytest.mark.parametrize("kind", ["continualposttraining", "ContinualPostTrainings", "CPT"])
def test_a_wrong_kind_is_told_the_kind_as_written(resource, kind):
    """Issue 26: the suggestion keeps the kind's case (`kubectl` and the API server match it exactly)."""
    resource["kind"] = kind
    with pytest.raises(SpecError) as err:
        validate_resource(resource)
    assert f"kind: input should be 'ContinualPostTraining' (got {kind!r})" in err.value.problems


def test_all_problems_reported_at_once(resource):
    resource["spec"]["method"] = "nope"
    resource["spec"]["tasks"][0]["name"] = "UPPER"
    with pytest.raises(SpecError) as err:
        validate_resource(resource)
    assert len(err.value.problems) == 2


def test_local_mode_accepts_local_paths_but_not_secrets(resource):
    resource["spec"]["storage"] = {"uri": "runs/demo"}
    resource["spec"]["tasks"][0]["train"] = "examples/data/add-train.jsonl"
    validate_resource(resource, mode="local")
    resource["spec"]["storage"]["secretRef"] = "s3-creds"
    with pytest.raises(SpecError, match="spec.storage.secretRef"):
        validate_resource(resource, mode="local")


def test_status_is_not_validated_as_input(resource):
    resource["status"] = {"phase": "Whatever", "unknown": 1}
    validate_resource(copy.deepcopy(resource))


@pytest.mark.parametrize("doc", [None, [], "text", {"kind": "ContinualPostTraining"}])
def test_non_resources_are_rejected_cleanly(doc):
    with pytest.raises(SpecError):
        validate_resource(doc)


def test_self_sft_samples_first_with_the_rif_settings(resource):
    from cpt_core.stage import stages_for

    resource["spec"]["method"] = "self-sft"
    resource["spec"]["rif"] = {"rollouts": 4}
    assert validate_resource(resource).spec.rif_effective.rollouts == 4
    assert stages_for("self-sft", 1) == ["filter", "train", "evaluate"]
    assert stages_for("sft", 1) == ["train", "evaluate"] and stages_for("self-sft", 0) == ["evaluate"]


def test_completions_per_step_must_divide_by_the_learner_world(resource, tmp_path):
    """promptsPerStep x groupSize split over the learner ranks: refused by validation (and `cpt validate`),
    never first found by a GPU pod that fails and is retried."""
    resource["spec"]["method"] = "grpo"
    resource["spec"]["grpo"] = {"promptsPerStep": 3, "groupSize": 2}
    resource["spec"]["learner"] = {"replicas": 2, "gpusPerReplica": 2}
    with pytest.raises(SpecError) as err:
        validate_resource(resource)
    text = str(err.value)
    assert "spec.grpo.promptsPerStep: promptsPerStep x groupSize (3 x 2 = 6)" in text
    assert "spec.learner.replicas" in text and "2 x 2 = 4" in text
    resource["spec"]["learner"] = {"replicas": 3, "gpusPerReplica": 0}  # 3 CPU ranks: 6 splits evenly
    validate_resource(resource)
    resource["spec"]["method"] = "sft"  # SFT's batch is split by the learner itself, no such rule
    resource["spec"]["learner"] = {"replicas": 4, "gpusPerReplica": 1}
    validate_resource(resource)
    import yaml

    from cpt_operator import cli

    resource["spec"]["method"] = "grpo"
    path = tmp_path / "cpt.yaml"
    path.write_text(yaml.safe_dump(resource))
    assert cli.main(["validate", str(path)]) == 2


def test_online_rif_has_no_filter_stage_and_is_refused_for_self_sft(resource):
    from cpt_core.stage import stages_for

    resource["spec"]["method"] = "rif-grpo"
    resource["spec"]["rif"] = {"mode": "online"}
    spec = validate_resource(resource).spec
    assert spec.online_rif.reprobe == 0.5 and spec.online_rif.reprobe_floor == 0.01  # GRESO's values
    assert stages_for(spec, 1) == ["train", "evaluate"] and not spec.has_filter_stage
    resource["spec"]["rif"] = {"mode": "prefilter"}
    assert stages_for(validate_resource(resource).spec, 1) == ["filter", "train", "evaluate"]
    resource["spec"].update(method="self-sft", rif={"mode": "online"})
    with pytest.raises(SpecError, match=r"spec.rif.mode: online is for rif-grpo"):
        validate_resource(resource)
