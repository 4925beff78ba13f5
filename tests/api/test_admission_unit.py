"""Issue 31 items 1-2: under a queue (TrainJob backend) a stage's rollout servers and learner ranks are one TrainJob
on a runtime of the stage's own, so Kueue admits them as one workload; every name fits Trainer v2.3/v2.4's rules
for the longest run and task names the API allows. Rendered objects are checked against Trainer's CRDs (v2.3.0
and the v2.4 line, tests/api/testdata)."""

import os
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from cpt_core.results import CommittedTask
from cpt_core.stage import StageConfig
from cpt_core.validation import validate_resource
from cpt_operator.kube import jobs, units
from cpt_operator.kube.children import render
from cpt_operator.kube.defaults import PlanDefaults
from cpt_operator.planner import Observed, plan, task_spec_hash
from cpt_operator.planner.intents import RolloutServers
from cpt_operator.planner.names import MAX_CHILD_NAME, job_name
from crdschema import crd_validator

HERE = Path(__file__).parent
DATA = HERE / "testdata"
NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)
KEY = b"golden-files-key-" + b"0" * 32
TRAINJOB = PlanDefaults(job_backend="trainjob", child_key=KEY)
PYTORCHJOB = PlanDefaults(job_backend="pytorchjob", child_key=KEY)
CRDS = {"v2.3": DATA, "v2.4": DATA / "trainer-v2.4"}


def _crd(version: str, plural: str) -> dict:
    return yaml.safe_load((CRDS[version] / f"trainer.kubeflow.org_{plural}.yaml").read_text())


@pytest.fixture(scope="module")
def validators():
    return {(v, plural): crd_validator(_crd(v, plural)) for v in CRDS for plural in ("trainjobs", "trainingruntimes")}


def _name_rules(version: str) -> list[re.Pattern]:
    """The TrainJob name rules of a Trainer version, read from its CRD's CEL rules (matches(...) and size(...))."""
    rules = _crd(version, "trainjobs")["spec"]["versions"][0]["schema"]["openAPIV3Schema"].get(
        "x-kubernetes-validations", [])
    out = [re.compile(m.group(1)) for r in rules for m in [re.search(r"metadata\.name\.matches\('(.+)'\)", r["rule"])]
           if m]
    sizes = [int(m.group(1)) for r in rules for m in [re.search(r"size\(self\.metadata\.name\) <= (\d+)", r["rule"])]
             if m]
    return out + [re.compile(rf"^.{{0,{min(sizes)}}}$")] if sizes else out


def _errors(validator, obj) -> list[str]:
    return [f"{list(e.path)}: {e.message}" for e in sorted(validator.iter_errors(obj), key=str)[:5]]


def _base_done(resource):
    spec = validate_resource(resource).spec
    return {0: CommittedTask(0, "base", task_spec_hash(spec, 0), {"tasks": {"add": 0.3}, "general": {}})}


def _children(resource, defaults, committed=None, jobs_=()):
    p = plan(resource, Observed(now=NOW, committed=committed or {}, jobs=tuple(jobs_)))
    return render(p, resource, (), defaults).create


def test_a_stage_with_servers_is_one_trainjob_on_its_own_runtime(resource, validators):
    resource["spec"]["queue"] = "team-a"
    resource["spec"]["rollout"] = {"engine": "vllm", "replicas": 3, "gpus": 2}
    resource["spec"]["rif"] = {"mode": "prefilter"}  # task 1 starts with its filter stage
    created = _children(resource, TRAINJOB, _base_done(resource))
    kinds = [o["kind"] for o in created]
    assert "Deployment" not in kinds, "no rollout Deployment under a queue: it would be a workload of its own"
    assert kinds.count("TrainJob") == 1 and kinds.count("TrainingRuntime") == 1
    runtime = next(o for o in created if o["kind"] == "TrainingRuntime")
    tj = next(o for o in created if o["kind"] == "TrainJob")
    service = next(o for o in created if o["kind"] == "Service")
    assert kinds.index("TrainingRuntime") < kinds.index("TrainJob") and kinds.index("Service") < kinds.index("TrainJob")
    assert any(o["kind"] == "Secret" for o in created), "the rollout key, for the servers in the unit"
    for version in CRDS:
        assert not _errors(validators[(version, "trainjobs")], tj), version
        assert not _errors(validators[(version, "trainingruntimes")], runtime), version
    # Only the TrainJob carries the queue: it is what Kueue admits, with every pod set of its runtime.
    assert tj["metadata"]["labels"][jobs.QUEUE_LABEL] == "team-a"
    assert jobs.QUEUE_LABEL not in runtime["metadata"]["labels"]
    assert jobs.QUEUE_LABEL not in service["metadata"]["labels"]
    assert tj["spec"]["runtimeRef"] == {"name": "demo-1-filter", "kind": "TrainingRuntime",
                                        "apiGroup": "trainer.kubeflow.org"}
    spec = runtime["spec"]["template"]["spec"]
    node, rollout = spec["replicatedJobs"]
    assert [node["name"], rollout["name"]] == ["node", "rollout"]
    assert spec["successPolicy"] == {"operator": "All", "targetReplicatedJobs": ["node"]}  # done with the learner
    assert node["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    servers = rollout["template"]["spec"]
    assert servers["parallelism"] == servers["completions"] == 3
    pod = servers["template"]
    container = pod["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["args"][0] == resource["spec"]["model"]  # the weights the task starts from
    # The learner finds exactly this stage's servers through the stage's headless Service.
    selector = service["spec"]["selector"]
    assert all(pod["metadata"]["labels"][k] == v for k, v in selector.items())
    assert selector["cpt.dev/stage"] == "filter" and service["spec"]["clusterIP"] == "None"
    config = yaml.safe_load(next(o for o in created if o["kind"] == "ConfigMap")["data"]["stage.yaml"])
    assert config["rollout_url"] == "dns+http://demo-1-filter-rollout.ml.svc:8000"


def test_a_stage_that_does_not_generate_has_no_servers(resource):
    """The base model's evaluation with the hf engine: the TrainJob alone, on the chart's runtime."""
    resource["spec"]["queue"] = "team-a"
    created = _children(resource, TRAINJOB)
    assert [o["kind"] for o in created if o["kind"] in ("TrainJob", "TrainingRuntime", "Deployment")] == ["TrainJob"]
    tj = next(o for o in created if o["kind"] == "TrainJob")
    assert tj["spec"]["runtimeRef"]["name"] == "cpt-learner"
    assert not any(e["name"] == "CPT_WEIGHT_SYNC_PORT" for e in tj["spec"]["trainer"]["env"])


def test_without_a_queue_servers_stay_a_deployment_per_task(resource):
    created = _children(resource, TRAINJOB, _base_done(resource))
    assert [o["kind"] for o in created].count("Deployment") == 1
    assert not any(o["kind"] == "TrainingRuntime" for o in created)


def test_golden_admission_units(resource):
    """What a queued stage with servers is created as, per backend (regenerate with CPT_UPDATE_GOLDEN=1): a
    TrainJob on the stage's own TrainingRuntime, or an AppWrapper around the servers' Job and the PyTorchJob
    (kube/wrapped; tests/api/test_appwrapper_unit.py)."""
    resource["spec"]["queue"] = "team-a"
    resource["spec"]["rif"] = {**resource["spec"].get("rif", {}), "mode": "prefilter"}  # a filter stage first
    got = {}
    for defaults in (TRAINJOB, PYTORCHJOB):
        created = _children(resource, defaults, _base_done(resource))
        got[defaults.job_backend] = {
            "children": [f"{o['kind']}/{o['metadata']['name']}" for o in created],
            "queued": [f"{o['kind']}/{o['metadata']['name']}" for o in created
                       if jobs.QUEUE_LABEL in o["metadata"].get("labels", {})],
            "objects": [o for o in created if o["kind"] in ("TrainingRuntime", "TrainJob", "AppWrapper")],
        }
    path = HERE / "golden" / "queue-units.yaml"
    if os.environ.get("CPT_UPDATE_GOLDEN") or not path.exists():
        path.write_text(yaml.safe_dump(got, sort_keys=False, width=120))
        if not os.environ.get("CPT_UPDATE_GOLDEN"):
            pytest.fail(f"golden file {path.name} was missing and has been written; review it and rerun")
    assert got == yaml.safe_load(path.read_text())
    assert got["trainjob"]["queued"] == ["TrainJob/demo-1-filter"]
    assert got["pytorchjob"]["queued"] == ["AppWrapper/demo-1-filter"]


LONGEST_RUN = "r" + "x" * 61 + "9"  # 63 characters, the longest metadata.name (a letter first on a cluster)


def _longest(resource) -> dict:
    resource["metadata"]["name"] = LONGEST_RUN
    resource["spec"]["queue"] = "q" * 63
    resource["spec"]["tasks"] = [{"name": f"t{i:02d}" + "n" * 37, "train": "s3://data/t/train.jsonl",
                                  "eval": "s3://data/t/eval.jsonl"} for i in range(100)]
    resource["spec"]["learner"] = {"replicas": 512, "gpusPerReplica": 1}
    resource["spec"]["rollout"] = {"engine": "vllm", "replicas": 64, "gpus": 1}
    resource["spec"]["grpo"] = {"promptsPerStep": 512, "groupSize": 8}
    return resource


@pytest.mark.parametrize("version", sorted(CRDS))
def test_longest_names_pass_trainers_name_rules(resource, validators, version):
    """The longest run name (63), 100 tasks of 40-character names, every stage, attempts into the hundreds: each
    TrainJob name passes the CRD's own CEL name rules, the replicated-job names fit v2.4's 20 characters, and the
    names JobSet derives (Jobs `<trainjob>-<job>-<index>`, pod host names `<job>-<pod index>`, at 512 learner
    ranks and 64 servers) stay DNS labels of at most 63 characters, as does the stage's Service."""
    resource = _longest(resource)
    cpt = validate_resource(resource)
    rules = _name_rules(version)
    assert len(rules) == 2, "the CRD names the TrainJob rules (a pattern and a length)"
    dns_label = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    checked = 0
    for index in (0, 1, 9, 10, 99, 100):
        for stage in ("filter", "train", "evaluate"):
            for attempt in (0, 1, 20, 999):
                job = job_name(LONGEST_RUN, index, stage, attempt)
                assert len(job) <= MAX_CHILD_NAME and all(r.match(job) for r in rules), job
                cfg = StageConfig(run=LONGEST_RUN, task_index=index, stage=stage, attempt=attempt, spec=cpt.spec,
                                  spec_hash="h", world_size=cpt.spec.learner.world_size)
                servers = RolloutServers(index, cpt.spec.model)
                objs = units.stage_unit(resource, job, units.with_stage_url(resource, job, cfg, servers, TRAINJOB),
                                        servers, TRAINJOB)
                runtime, service, tj = objs
                assert not _errors(validators[(version, "trainjobs")], tj)
                assert not _errors(validators[(version, "trainingruntimes")], runtime)
                assert dns_label.match(service["metadata"]["name"]) and len(service["metadata"]["name"]) <= 63
                for rj in runtime["spec"]["template"]["spec"]["replicatedJobs"]:
                    assert len(rj["name"]) <= units.MAX_REPLICATED_JOB_NAME
                    pods = 512 if rj["name"] == jobs.TRAINJOB_NODE else rj["template"]["spec"]["parallelism"]
                    host = f"{job}-{rj['name']}-{rj.get('replicas', 1) - 1}-{pods - 1}"
                    assert len(host) <= 63 and dns_label.match(host), host
                checked += 1
    assert checked == 6 * 3 * 4
    # and the whole plan of the longest run renders valid objects
    for obj in _children(resource, TRAINJOB, _base_done(resource)):
        for key, plural in (("TrainJob", "trainjobs"), ("TrainingRuntime", "trainingruntimes")):
            if obj["kind"] == key:
                assert not _errors(validators[(version, plural)], obj)
                assert len(obj["metadata"]["name"]) <= MAX_CHILD_NAME
