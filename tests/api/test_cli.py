"""`cpt validate`, `cpt plan` and `cpt crd` as a user runs them."""

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from cpt_core.results import CommittedTask
from cpt_core.validation import validate_resource
from cpt_operator.kube.children import render
from cpt_operator.planner import Observed, plan, task_spec_hash

ROOT = Path(__file__).resolve().parents[2]
KUBE_VERSION = "1.30.0"


def cpt(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "cpt_operator.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def validate_builtin(obj):
    """Strict validation for built-in kinds; the PyTorchJob is checked by shape (no schema ships for it)."""
    if obj["kind"] == "PyTorchJob":
        assert obj["apiVersion"] == "kubeflow.org/v1"
        specs = obj["spec"]["pytorchReplicaSpecs"]
        assert set(specs) <= {"Master", "Worker"} and specs["Master"]["replicas"] == 1
        for replica in specs.values():
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", **replica["template"]["metadata"]},
                   "spec": replica["template"]["spec"]}
            kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
            assert replica["template"]["spec"]["containers"][0]["name"] == "pytorch"
        return
    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_validate_accepts_examples():
    files = sorted(str(p) for p in (ROOT / "examples").glob("*.yaml"))
    assert len(files) >= 2
    result = cpt("validate", *files)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": valid") == len(files)


def test_validate_rejects_bad_file_with_named_errors(tmp_path):
    doc = yaml.safe_load((ROOT / "examples" / "cpt.yaml").read_text())
    doc["spec"]["tasks"][1]["name"] = doc["spec"]["tasks"][0]["name"]
    doc["spec"]["grpo"]["groupSize"] = 1
    doc["spec"]["learner"]["zeroStag"] = 2
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    result = cpt("validate", str(bad))
    assert result.returncode == 2
    assert "spec.tasks[1].name: duplicate name 'scienceqa'" in result.stderr
    assert "spec.grpo.groupSize" in result.stderr
    assert "spec.learner.zeroStag: unknown field 'zeroStag'; did you mean 'zeroStage'?" in result.stderr


@pytest.mark.parametrize("text,message", [
    ("a: [unclosed", "is not valid YAML"),
    ("", "holds no document"),
])
def test_validate_unreadable_input(tmp_path, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = cpt("validate", str(bad))
    assert result.returncode != 0 and message in result.stderr
    assert cpt("validate", str(tmp_path / "missing.yaml")).returncode != 0


def test_plan_prints_valid_kubernetes_objects():
    result = cpt("plan", "examples/cpt.yaml", "-n", "research")
    assert result.returncode == 0, result.stderr
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    assert [o["kind"] for o in objects] == ["NetworkPolicy", "ConfigMap", "PyTorchJob"]
    for obj in objects:
        validate_builtin(obj)


def test_plan_of_a_task_with_rollout_servers_is_valid():
    """Mid-run (base evaluated): rollout Deployment + Service too, all valid objects."""
    doc = yaml.safe_load((ROOT / "examples" / "cpt.yaml").read_text())
    doc["metadata"]["uid"] = "0f7e4a5e-1111-2222-3333-444455556666"
    spec = validate_resource(doc).spec
    base = CommittedTask(0, "base", task_spec_hash(spec, 0), {"tasks": {}})
    children = render(plan(doc, Observed(now=datetime.now(timezone.utc), committed={0: base})), doc, ()).create
    kinds = sorted(o["kind"] for o in children)
    assert kinds == ["ConfigMap", "Deployment", "NetworkPolicy", "PyTorchJob", "Secret", "Service"]
    for obj in children:
        validate_builtin(obj)


def test_crd_command_prints_the_committed_crd():
    result = cpt("crd")
    assert result.returncode == 0
    assert result.stdout == (ROOT / "crds" / "continualposttraining.yaml").read_text()
