"""Pure pieces of the operator: object -> observed job, status -> merge patch, settings from env, docs table."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from cpt_operator.kube.jobs import pytorchjob_phase
from cpt_operator.kube.observe import event_body, merge_patch_for, observed_job, owned_by
from cpt_operator.kube.settings import ENV, Settings, SettingsError

REPO = Path(__file__).resolve().parents[2]


def _job(conditions=None, suspend=False, labels=None, **status):
    return {"metadata": {"name": "r-1-train-r2", "labels": labels if labels is not None else {
        "cpt.dev/task-index": "1", "cpt.dev/stage": "train", "cpt.dev/attempt": "2"}},
            "spec": {"runPolicy": {"suspend": suspend}},
            "status": {"conditions": conditions or [], **status}}


@pytest.mark.parametrize("conditions, phase", [
    ([], "Pending"),
    ([{"type": "Created", "status": "True"}], "Pending"),
    ([{"type": "Running", "status": "True"}], "Running"),
    ([{"type": "Running", "status": "False"}, {"type": "Succeeded", "status": "True"}], "Succeeded"),
    ([{"type": "Succeeded", "status": "False"}, {"type": "Failed", "status": "True"}], "Failed"),
    ([{"type": "Restarting", "status": "True"}], "Pending"),
])
def test_job_phase_from_conditions(conditions, phase):
    assert pytorchjob_phase({"status": {"conditions": conditions}})[0] == phase


def test_observed_job_reads_labels_times_and_suspension():
    job = observed_job(_job([{"type": "Failed", "status": "True", "message": "OOMKilled",
                              "lastTransitionTime": "2026-01-02T03:04:05Z"}], suspend=True))
    assert (job.task_index, job.stage, job.attempt, job.phase) == (1, "train", 2, "Failed")
    assert job.finished_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert job.message == "OOMKilled" and job.suspended
    done = observed_job(_job([{"type": "Succeeded", "status": "True"}], completionTime="2026-01-02T00:00:00Z"))
    assert done.finished_at == datetime(2026, 1, 2, tzinfo=timezone.utc)
    assert observed_job(_job(labels={"cpt.dev/stage": "train"})) is None  # not ours


def test_merge_patch_for_removes_vanished_keys_and_replaces_lists():
    old = {"phase": "Running", "currentTask": "t1", "accuracy": {"tasks": ["t1"], "matrix": [[0.1]]}, "tasks": [1]}
    new = {"phase": "Succeeded", "accuracy": {"tasks": ["t1"], "matrix": [[0.1], [0.9]]}, "tasks": [1]}
    assert merge_patch_for(old, new) == {"phase": "Succeeded", "currentTask": None,
                                         "accuracy": {"matrix": [[0.1], [0.9]]}}
    assert merge_patch_for(new, new) == {}


def test_owned_by_and_event_body():
    assert owned_by({"metadata": {"ownerReferences": [{"uid": "a"}]}}, "a")
    assert not owned_by({"metadata": {"ownerReferences": [{"uid": "b"}]}}, "a")
    resource = {"apiVersion": "cpt.dev/v1alpha1", "kind": "ContinualPostTraining",
                "metadata": {"name": "r", "namespace": "ns", "uid": "u", "resourceVersion": "7"}}
    body = event_body(resource, "Warning", "StageFailed", "x" * 5000, datetime(2026, 1, 1, tzinfo=timezone.utc), "pod")
    assert body["involvedObject"]["uid"] == "u" and body["metadata"]["generateName"] == "r."
    assert len(body["message"]) == 1024 and body["lastTimestamp"] == "2026-01-01T00:00:00Z"


def test_settings_defaults_and_overrides():
    default = Settings.from_env({})
    assert default.namespaces == () and default.metrics_port == 9090 and default.reconcile_interval == 600
    assert default.plan_defaults.image_pull_policy == "IfNotPresent"
    cfg = Settings.from_env({"CPT_NAMESPACES": "a, b-*", "CPT_LEARNER_IMAGE": "me/learner:1",
                             "CPT_STORAGE_ENDPOINT": "http://minio:9000", "CPT_STORAGE_PATH_STYLE": "true",
                             "CPT_METRICS_PORT": "0", "CPT_IMAGE_PULL_POLICY": "Always"})
    assert cfg.namespaces == ("a", "b-*") and cfg.plan_defaults.learner_image == "me/learner:1"
    assert cfg.storage_endpoint == "http://minio:9000" and cfg.storage_path_style and cfg.metrics_port == 0
    for bad in ({"CPT_RECONCILE_INTERVAL": "soon"}, {"CPT_METRICS_PORT": "80.5"}, {"CPT_IMAGE_PULL_POLICY": "Sometimes"},
                {"CPT_STORAGE_PATH_STYLE": "maybe"}, {"CPT_ERROR_BACKOFF": "-1"},
                {"CPT_PEERING": "cpt"}):  # retired: refused, not ignored (two replicas would pass every run)
        with pytest.raises(SettingsError, match=next(iter(bad))):
            Settings.from_env(bad)
    assert Settings.from_env({"CPT_PEERING": ""}) == default  # empty is what "unset" always meant


def test_docs_list_every_setting():
    docs = (REPO / "docs" / "operator.md").read_text()
    for name, (default, _) in ENV.items():
        assert f"`{name}`" in docs, f"docs/operator.md does not document {name}"


def test_storage_defaults_fill_only_what_the_spec_leaves_out():
    from cpt_operator.kube.controller.passes import effective_resource

    cfg = Settings.from_env({"CPT_STORAGE_ENDPOINT": "http://minio:9000", "CPT_STORAGE_PATH_STYLE": "true"})
    resource = {"spec": {"storage": {"uri": "s3://b/r/", "region": "eu-west-1"}}}
    out = effective_resource(resource, cfg)
    assert out["spec"]["storage"] == {"uri": "s3://b/r/", "region": "eu-west-1", "endpoint": "http://minio:9000",
                                      "pathStyle": True}
    assert resource["spec"]["storage"] == {"uri": "s3://b/r/", "region": "eu-west-1"}  # not mutated
    own = {"spec": {"storage": {"uri": "s3://b/r/", "endpoint": "https://s3.example"}}}
    assert effective_resource(own, cfg)["spec"]["storage"]["endpoint"] == "https://s3.example"
    assert effective_resource(resource, Settings.from_env({})) is resource
