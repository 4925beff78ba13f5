"""The exporter, scraped over HTTP: values equal the status, stale and deleted series disappear."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from cpt_operator import metrics
from cpt_core.api import CptSpec, CptStatus
from obs_fixtures import MATRIX, run

NS, NAME = "research", "toy"


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, labels): value} of everything the endpoint serves."""
    text = requests.get(url, timeout=5).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def series(scraped, name, **labels):
    """Samples of one metric whose labels include `labels`: {frozenset(labels): value}."""
    want = set(labels.items())
    return {lab: v for (n, lab), v in scraped.items() if n == name and want <= set(lab)}


def one(scraped, name, **labels) -> float:
    found = series(scraped, name, **labels)
    assert len(found) == 1, (name, labels, found)
    return next(iter(found.values()))


@pytest.fixture
def server():
    srv = metrics.serve(0)
    yield srv
    srv.shutdown()
    metrics.forget(NS, NAME)
    metrics.forget(NS, "other")


def test_fixture_is_the_real_wire_form():
    """The fixture must parse with the API models, or the exporter would be tested against made-up keys."""
    spec, status, _ = run()
    CptSpec.model_validate(spec)
    assert CptStatus.model_validate(status).wire()["accuracy"]["matrix"] == MATRIX


def test_run_through_a_regression_scrapes_the_status_values(server):
    spec, status, stats = run()
    # Pass 1: only task 1 trained and evaluated: nothing forgotten yet.
    early = {**status, "currentTask": "mul", "completedTasks": 1,
             "accuracy": {"tasks": ["add", "mul", "rev"], "matrix": MATRIX[:2]},
             "averageAccuracy": 0.8, "backwardTransfer": None, "forgetting": None}
    metrics.publish(NS, NAME, spec, early, stats)
    got = scrape(server.url)
    assert one(got, "cpt_task_accuracy_drop", namespace=NS, cpt=NAME, task="add") == 0
    assert not series(got, "cpt_backward_transfer", cpt=NAME)

    # Pass 2: task 2 done, task 1 dropped 0.80 -> 0.70, beyond maxDrop 0.05.
    metrics.publish(NS, NAME, spec, status, stats)
    got = scrape(server.url)
    for i, row in enumerate(MATRIX):
        after = "base" if i == 0 else status["accuracy"]["tasks"][i - 1]
        for j, value in enumerate(row):
            task = status["accuracy"]["tasks"][j]
            cell = series(got, "cpt_task_accuracy", cpt=NAME, task=task, after_task=after)
            assert cell == ({} if value is None else {next(iter(cell)): value}), (after, task)
    for metric, field in [("cpt_average_accuracy", "averageAccuracy"), ("cpt_backward_transfer", "backwardTransfer"),
                          ("cpt_forgetting", "forgetting"), ("cpt_plasticity", "plasticity"),
                          ("cpt_run_completed_tasks", "completedTasks"), ("cpt_run_total_tasks", "totalTasks")]:
        assert one(got, metric, namespace=NS, cpt=NAME) == status[field], metric
    assert one(got, "cpt_forgetting_max_drop", cpt=NAME) == spec["forgetting"]["maxDrop"]
    drop = one(got, "cpt_task_accuracy_drop", cpt=NAME, task="add")
    assert drop == pytest.approx(0.10) and drop > spec["forgetting"]["maxDrop"]
    assert one(got, "cpt_task_best_accuracy", cpt=NAME, task="add") == 0.80
    assert one(got, "cpt_task_accuracy", cpt=NAME, task="add", after_task="mul", after_index="2") == 0.70
    assert one(got, "cpt_task_accuracy", cpt=NAME, task="add", after_task="base", after_index="0") == 0.30
    assert one(got, "cpt_task_accuracy_drop", cpt=NAME, task="mul") == 0
    assert one(got, "cpt_backward_transfer_after_task", cpt=NAME, after_task="mul") == pytest.approx(-0.1)
    assert one(got, "cpt_average_accuracy_after_task", cpt=NAME, after_task="add") == 0.80
    assert one(got, "cpt_general_score", cpt=NAME, benchmark="general", after_task="mul") == 0.80
    assert one(got, "cpt_general_score_drop", cpt=NAME, benchmark="general") == pytest.approx(0.10)
    for t in status["tasks"][1:]:
        assert one(got, "cpt_rif_filtered_fraction", cpt=NAME, task=t["name"]) == t["filteredFraction"]
        assert one(got, "cpt_rif_kept", cpt=NAME, task=t["name"]) == t["kept"]
        assert one(got, "cpt_rif_dropped", cpt=NAME, task=t["name"]) == t["dropped"]
    assert one(got, "cpt_run_phase", cpt=NAME, phase="Running") == 1
    assert sum(series(got, "cpt_run_phase", cpt=NAME).values()) == 1
    assert one(got, "cpt_task_active_stage", cpt=NAME, task="rev", stage="train") == 1
    assert one(got, "cpt_stage_started_timestamp_seconds", cpt=NAME, task="rev") == 1_700_000_000.0
    assert one(got, "cpt_rollout_tokens", cpt=NAME, task="add") == 120000
    assert one(got, "cpt_stage_duration_seconds", cpt=NAME, task="mul", stage="train") == 590.0
    assert one(got, "cpt_stage_attempts", cpt=NAME, task="mul", stage="train") == 2
    assert one(got, "cpt_run_info", cpt=NAME, method="rif-grpo", on_regression="alert") == 1


def test_status_conditions_are_gauges(server):
    """StorageIntact=False (a committed task damaged) and StorageReachable=False must reach Prometheus: the
    CptCommittedTaskDamaged and CptStorageUnreachable alerts read them."""
    spec, status, stats = run()
    conditions = [{"type": "StorageIntact", "status": "False", "reason": "CommittedTaskDamaged", "message": "x",
                   "lastTransitionTime": "2026-11-01T00:00:00Z"},
                  {"type": "StorageReachable", "status": "True", "reason": "Reachable", "message": "",
                   "lastTransitionTime": "2026-11-01T00:00:00Z"}]
    metrics.publish(NS, NAME, spec, {**status, "conditions": conditions}, stats)
    got = scrape(server.url)
    assert one(got, "cpt_run_condition", cpt=NAME, condition="StorageIntact") == 0
    assert one(got, "cpt_run_condition", cpt=NAME, condition="StorageReachable") == 1
    assert set(series(got, "cpt_run_condition", cpt=NAME)) and len(series(got, "cpt_run_condition", cpt=NAME)) == 2


def test_forget_removes_every_series_of_the_resource_only(server):
    spec, status, stats = run()
    metrics.publish(NS, NAME, spec, status, stats)
    metrics.publish(NS, "other", spec, status)
    assert series(scrape(server.url), "cpt_task_accuracy", cpt=NAME)
    metrics.forget(NS, NAME)
    got = scrape(server.url)
    assert not [k for k in got if ("cpt", NAME) in k[1]]
    assert series(got, "cpt_task_accuracy", cpt="other")
    metrics.forget(NS, NAME)  # idempotent


def test_a_new_status_replaces_stale_series(server):
    spec, status, _ = run()
    metrics.publish(NS, NAME, spec, status)
    status["tasks"][3].update(stage="evaluate")
    status["phase"] = "Failed"
    metrics.publish(NS, NAME, spec, status)
    got = scrape(server.url)
    assert one(got, "cpt_task_active_stage", cpt=NAME, task="rev", stage="evaluate") == 1
    assert one(got, "cpt_task_active_stage", cpt=NAME, task="rev", stage="train") == 0
    assert not series(got, "cpt_stage_started_timestamp_seconds", cpt=NAME)  # only while Running
    assert one(got, "cpt_run_phase", cpt=NAME, phase="Failed") == 1


def test_stage_start_is_remembered_until_the_stage_changes():
    spec, status, _ = run()

    def started(now):
        metrics.publish(NS, NAME, spec, status, now=now)
        got = {s.labels["stage"]: s.value for fam in metrics.REGISTRY.collect() for s in fam.samples
               if s.name == "cpt_stage_started_timestamp_seconds" and s.labels["cpt"] == NAME}
        return got

    try:
        assert started(100.0) == {"train": 100.0}
        assert started(200.0) == {"train": 100.0}
        status["tasks"][3]["stage"] = "evaluate"
        assert started(300.0) == {"evaluate": 300.0}
        metrics.forget(NS, NAME)
        assert started(400.0) == {"evaluate": 400.0}
    finally:
        metrics.forget(NS, NAME)


def test_a_new_resource_without_status_publishes_its_spec_only(server):
    spec, _, _ = run()
    metrics.publish(NS, NAME, spec, {})
    got = scrape(server.url)
    assert one(got, "cpt_run_phase", cpt=NAME, phase="Pending") == 1
    assert one(got, "cpt_run_total_tasks", cpt=NAME) == 3
    assert not series(got, "cpt_task_accuracy", cpt=NAME)


def test_reconcile_health(server):
    before = scrape(server.url)
    metrics.observe_reconcile(0.02, error=False)
    metrics.observe_reconcile(3.0, error=True)
    after = scrape(server.url)

    def delta(name, **labels):
        return one(after, name, **labels) - one(before, name, **labels)

    assert delta("cpt_operator_reconcile_total") == 2
    assert delta("cpt_operator_reconcile_errors_total") == 1
    assert delta("cpt_operator_reconcile_duration_seconds_count") == 2
    assert delta("cpt_operator_reconcile_duration_seconds_bucket", le="5.0") == 2
    assert delta("cpt_operator_reconcile_duration_seconds_bucket", le="1.0") == 1


def test_registry_is_not_the_global_one():
    import prometheus_client

    assert metrics.REGISTRY is not prometheus_client.REGISTRY
    assert not any(n.startswith("cpt_") for n in prometheus_client.REGISTRY._names_to_collectors)


def test_stats_keys_by_index_string_or_name_and_snake_case():
    spec, status, _ = run()
    status["tasks"] = status["tasks"][:2]  # task mul not listed yet: its stats still count
    stats = {"1": {"rollout_tokens": 10, "stage_durations": {"train": 5.0}}, "mul": {"learnerSteps": 7}}
    got = {(s.name, s.labels[2:]): s.value for s in metrics.samples(NS, NAME, spec, status, stats)}
    assert got[("cpt_rollout_tokens", ("add",))] == 10
    assert got[("cpt_stage_duration_seconds", ("add", "train"))] == 5.0
    assert got[("cpt_learner_steps", ("mul",))] == 7
    assert ("cpt_task_active_stage", ("mul", "train")) not in got  # no stage information for it


def test_filtered_fraction_falls_back_to_kept_and_dropped():
    spec, status, _ = run()
    del status["tasks"][1]["filteredFraction"]
    got = {(s.name, s.labels[2:]): s.value for s in metrics.samples(NS, NAME, spec, status)}
    assert got[("cpt_rif_filtered_fraction", ("add",))] == 0.4


def test_publish_accepts_api_models():
    spec, status, _ = run()
    metrics.publish(NS, NAME, CptSpec.model_validate(spec), CptStatus.model_validate(status))
    try:
        got = {s.labels["after_index"]: s.value for fam in metrics.REGISTRY.collect() for s in fam.samples
               if s.name == "cpt_task_accuracy" and s.labels["cpt"] == NAME and s.labels["task"] == "add"}
        assert got == {"0": 0.30, "1": 0.80, "2": 0.70}
    finally:
        metrics.forget(NS, NAME)


def test_rollout_policy_version_per_replica_and_down_as_minus_one():
    """A running train stage's last reading of its replicas (cpt run feeds it from the stage's CPT_PROGRESS lines):
    one series per replica, -1 for a replica that is down or holds another policy."""
    spec, status, _ = run()
    stats = {"mul": {"rolloutPolicyVersions": {"0": 7, "1": None}, "rolloutLearnerStep": 7}}
    got = {(s.name, s.labels[2:]): s.value for s in metrics.samples(NS, NAME, spec, status, stats)}
    assert got[("cpt_rollout_policy_version", ("mul", "0"))] == 7
    assert got[("cpt_rollout_policy_version", ("mul", "1"))] == -1
    assert got[("cpt_rollout_learner_step", ("mul",))] == 7
    assert not [k for k in got if k[0] == "cpt_rollout_policy_version" and k[1][0] != "mul"]


def test_policy_kl_gauges_from_status_and_from_a_running_stage():
    """cpt_policy_kl / _max per task and reference: a committed task's from its status entry, the running task's
    from the stage's progress lines (cpt run's stats)."""
    spec, status, stats = run()
    got = {(s.name, s.labels[2], s.labels[3]): s.value for s in metrics.samples("ns", "toy", spec, status, stats)
           if s.name.startswith("cpt_policy_kl")}
    assert got == {("cpt_policy_kl", "mul", "base"): 0.42, ("cpt_policy_kl_max", "mul", "base"): 0.5,
                   ("cpt_policy_kl", "mul", "taskStart"): 0.3, ("cpt_policy_kl_max", "mul", "taskStart"): 0.31,
                   ("cpt_policy_kl", "rev", "base"): 0.61, ("cpt_policy_kl_max", "rev", "base"): 0.61,
                   ("cpt_policy_kl", "rev", "taskStart"): 0.2, ("cpt_policy_kl_max", "rev", "taskStart"): 0.2}


def test_defaults_the_spec_leaves_out_are_the_models_own(monkeypatch):
    """A spec without forgetting/method is exported with the API models' defaults, read from the models (issue 30
    item 2): a default changed in cpt_core/api.py changes the exported value with no second literal to update."""
    from cpt_core import api

    spec = {"model": "m", "tasks": [{"name": "a", "train": "t", "eval": "e"}]}

    def exported():
        got = {s.name: s for s in metrics.samples(NS, NAME, spec, {})}
        info = got["cpt_run_info"].labels[2:]
        return got["cpt_forgetting_max_drop"].value, info

    assert exported() == (api.ForgettingSpec().max_drop, (api.CptSpec.field_default("method"),
                                                          api.ForgettingSpec().on_regression))
    monkeypatch.setattr(api.ForgettingSpec.model_fields["max_drop"], "default", 0.125)
    monkeypatch.setattr(api.ForgettingSpec.model_fields["on_regression"], "default", "pause")
    monkeypatch.setattr(api.CptSpec.model_fields["method"], "default", "sft")
    assert exported() == (0.125, ("sft", "pause"))
