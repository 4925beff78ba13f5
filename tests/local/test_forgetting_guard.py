"""The forgetting guard in `cpt run`: a regression beyond maxDrop suspends the run before the next task, and
the metrics served are the values in the status."""

import json

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cpt_operator import metrics
from cpt_operator.local.runner import load_resource, run_file
from cpt_operator.planner import task_spec_hash
from cpt_core.storage import commit_task, layout, open_store

from .conftest import write_spec

ROWS = {  # a[i][j]: task 'reverse' drops 0.50 -> 0.25 after training 'add' (maxDrop 0.05)
    0: {"reverse": 0.125, "add": 0.0, "sort": 0.0},
    1: {"reverse": 0.5},
    2: {"reverse": 0.25, "add": 0.375},
}


def _commit_rows(spec, storage):
    store = open_store(storage)
    names = ["base"] + [t.name for t in spec.tasks]
    for index, tasks in ROWS.items():
        store.put_json(layout.task_key(index, names[index], layout.EVAL),
                       {"task_index": index, "tasks": tasks, "general": {"copy": 1.0}, "seconds": 1.0})
        commit_task(store, index, names[index], task_spec_hash(spec, index), {})


@pytest.mark.parametrize("policy", ["pause", "alert"])
def test_regression_pauses_before_next_task(workspace, capsys, policy):
    extra = "    - {name: sort, train: reverse-train.jsonl, eval: reverse-eval.jsonl}\n"
    path = write_spec(workspace, name=f"guard-{policy}", storage=f"out-guard-{policy}", extra_tasks=extra,
                      **{"  storage:": f"  forgetting: {{maxDrop: 0.05, onRegression: {policy}}}\n  storage:"})
    _, spec = load_resource(str(path))
    _commit_rows(spec, spec.storage.uri)
    if policy == "alert":
        # alert only reports: the run would go on to task 3; stop it right away by suspending instead
        path.write_text(path.read_text().replace("  storage:", "  suspend: true\n  storage:"))
    code = run_file(str(path), metrics_port=-1)
    out = capsys.readouterr().out
    assert code == 0
    assert "==>" not in out  # nothing trained: the guard acts before the next task starts
    state = json.loads((workspace / f"out-guard-{policy}" / ".cpt-local" / "status.json").read_text())
    status = state["status"]
    assert status["phase"] == "Suspended"
    cond = {c["type"]: c for c in status["conditions"]}
    assert cond["ForgettingRegression"]["status"] == "True"
    assert "'reverse' dropped 0.250 below its best" in cond["ForgettingRegression"]["message"]
    reason = cond["Suspended"]["reason"]
    assert reason == ("ForgettingRegression" if policy == "pause" else "UserSuspended")
    if policy == "pause":
        assert "run suspended: forgetting regression after task 'add'" in out

    # the exporter holds exactly the status values
    scraped = {}
    for family in text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode()):
        for sample in family.samples:
            if sample.labels.get("cpt") == f"guard-{policy}":
                scraped[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    def value(name, **labels):
        labels = {"namespace": "local", "cpt": f"guard-{policy}", **labels}
        matches = [v for (n, ls), v in scraped.items() if n == name and all(dict(ls).get(k) == w for k, w in labels.items())]
        assert len(matches) == 1, (name, labels, matches)
        return matches[0]
    assert value("cpt_backward_transfer") == pytest.approx(status["backwardTransfer"])
    assert value("cpt_average_accuracy") == pytest.approx(status["averageAccuracy"])
    assert value("cpt_forgetting") == pytest.approx(status["forgetting"])
    assert value("cpt_task_accuracy", task="reverse", after_task="add") == pytest.approx(0.25)
    assert value("cpt_task_accuracy_drop", task="reverse") == pytest.approx(0.25)
    assert value("cpt_run_phase", phase="Suspended") == 1
