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
    # Issue 26, low items.
    "endpoint that does not parse": (_set("spec.storage.endpoint", "http://[::1"), "spec.storage.endpoint",
                                     "not a URL that parses"),
    "endpoint port out of range": (_set("spec.storage.endpoint", "https://s3.example.com:99999"),
                                   "spec.storage.endpoint", "not a URL that parses"),
    "endpoint with a non-ASCII host": (_set("spec.storage.endpoint", "https://s3.exämple.com"),
                                       "spec.storage.endpoint", "xn--"),
    "image with a trailing newline": (_set("spec.learner.image", "ghcr.io/cpt-operator/learner:0.2.0\n"),
                                      "spec.learner.image", "not a valid image reference"),
    "image with a Unicode tag": (_set("spec.rollout.image", "ghcr.io/cpt-operator/rollout:0.2.\u0661"),
                                 "spec.rollout.image", "not a valid image reference"),
}

# Hosts a run may not send the operator to unless the admin allows them: its marker PUT and reads would reach
# the cloud's metadata service, the operator's own pod, or the cluster's Services.
INTERNAL_ENDPOINTS = {
    "http://169.254.169.254/latest": "link-local",
    "http://[fe80::1]:9000": "link-local",
    "http://127.0.0.1:9000": "loopback",
    "http://127.1:9000": "loopback",            # inet_aton's shorthand, which getaddrinfo connects to
    "http://2130706433": "loopback",
    "http://0x7f.0.0.1": "loopback",
    "http://[::ffff:127.0.0.1]": "loopback",
    "http://localhost:9000": "loopback",
    "http://[::1]:9000": "loopback",
    "http://10.96.0.1": "private",
    "http://100.64.3.4:9000": "not a public address",
    "http://minio:9000": "single-label",
    "http://minio.storage.svc:9000": "cluster- or site-internal",
    "http://kubernetes.default.svc.cluster.local": "cluster- or site-internal",
    "http://metadata.google.internal": "cluster- or site-internal",
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


@pytest.mark.parametrize("endpoint", INTERNAL_ENDPOINTS)
def test_internal_storage_endpoints_are_refused_unless_the_admin_allows_them(endpoint):
    doc = example("rif-grpo")
    doc["spec"]["storage"]["endpoint"] = endpoint
    with pytest.raises(SpecError) as err:
        validate_resource(doc, policy=TenantPolicy())
    (problem,) = err.value.problems
    assert problem.startswith("spec.storage.endpoint: ") and INTERNAL_ENDPOINTS[endpoint] in problem
    assert "policy.allowedInternalEndpoints" in problem
    validate_resource(doc, policy=TenantPolicy(internal_endpoints=("*",)))
    doc["spec"]["storage"].pop("secretRef")  # (a cluster-only field)
    validate_resource(doc, "local")  # `cpt run` on the user's own machine (its MinIO on localhost)


def test_the_admin_allows_internal_endpoints_by_host_suffix_or_cidr():
    doc = example("rif-grpo")
    allowed = TenantPolicy(internal_endpoints=("minio.storage.svc", ".ceph.internal", "10.20.0.0/16", "fd00::/8"))
    for endpoint in ("http://minio.storage.svc:9000", "https://rgw.ceph.internal", "http://10.20.3.4:9000",
                     "http://[fd00::5]:9000", "http://MINIO.storage.svc.:9000"):
        doc["spec"]["storage"]["endpoint"] = endpoint
        validate_resource(doc, policy=allowed)
    for endpoint in ("http://other.storage.svc:9000", "http://10.21.0.1", "http://169.254.169.254",
                     "http://evilceph.internal"):
        doc["spec"]["storage"]["endpoint"] = endpoint
        with pytest.raises(SpecError):
            validate_resource(doc, policy=allowed)


def test_the_operators_own_default_endpoint_is_allowed_and_bad_cidrs_fail_at_start():
    """The operator fills CPT_STORAGE_ENDPOINT into specs that leave it out: the admin's choice, not a tenant's."""
    policy = TenantPolicy.from_env({"CPT_STORAGE_ENDPOINT": "http://minio.storage.svc:9000",
                                    "CPT_ALLOWED_INTERNAL_ENDPOINTS": "10.0.0.0/8"})
    doc = example("rif-grpo")
    for endpoint in ("http://minio.storage.svc:9000", "http://10.1.2.3:9000"):
        doc["spec"]["storage"]["endpoint"] = endpoint
        validate_resource(doc, policy=policy)
    with pytest.raises(ValueError, match="CPT_ALLOWED_INTERNAL_ENDPOINTS: '10.0.0/33' is not a CIDR"):
        TenantPolicy.from_env({"CPT_ALLOWED_INTERNAL_ENDPOINTS": "10.0.0/33"})
    with pytest.raises(ValueError, match=r"CPT_STORAGE_ENDPOINT='http://\[::1': not a URL that parses"):
        TenantPolicy.from_env({"CPT_STORAGE_ENDPOINT": "http://[::1"})


def test_public_endpoints_pass():
    doc = example("rif-grpo")
    for endpoint in ("https://s3.us-east-1.amazonaws.com", "https://storage.googleapis.com", "http://8.8.8.8:9000",
                     "https://[2001:4860:4860::8888]"):
        doc["spec"]["storage"]["endpoint"] = endpoint
        validate_resource(doc, policy=TenantPolicy())


# Modules that run what they are given, spawn processes, open files or sockets, or unpickle: each would run a
# tenant's completion (the reward's first argument) on the learner pod.
CODE_RUNNING = ["subprocess:getoutput", "os:system", "posix:system", "sys:exit", "builtins:eval", "importlib:import_module",
                "pty:spawn", "ctypes:CDLL", "runpy:run_path", "code:interact", "codeop:compile_command",
                "pickle:loads", "shutil:rmtree", "socket:create_connection", "multiprocessing:Process",
                "timeit:timeit", "pdb:run", "cProfile:run", "profile:run", "trace:Trace", "doctest:run_docstring_examples",
                "webbrowser:open", "tempfile:mktemp", "asyncio:create_subprocess_shell", "logging.config:listen",
                "pydoc:pipepager", "shelve:open", "marshal:loads", "zipimport:zipimporter", "platform:popen",
                "numpy:load", "torch:load", "sympy:sympify", "yaml:unsafe_load", "dill:loads", "transformers:pipeline",
                "cpt_trainer.cli:main", "team._internal:score", "team_rewards:__call__"]


@pytest.mark.parametrize("reward", CODE_RUNNING)
def test_code_running_modules_are_never_rewards_even_when_any_module_is_allowed(reward):
    doc = example("rif-grpo")
    doc["spec"]["tasks"][0]["reward"] = reward
    for mode, policy in (("cluster", TenantPolicy(reward_modules=("*",))), ("local", None)):
        with pytest.raises(SpecError) as err:
            validate_resource(doc, mode, policy=policy)
        assert any(p.startswith("spec.tasks[0].reward:") and "never be a reward" in p for p in err.value.problems)


def test_the_stage_refuses_them_too():
    """The learner's own loader checks again: a stage config that did not come through validation (a file, a
    planted ConfigMap) still never imports one."""
    from cpt_core.rewards import RewardError, load_reward

    for reward in ("subprocess:getoutput", "timeit:timeit", "numpy:load", "team:_hidden"):
        with pytest.raises(RewardError, match="never be a reward|is private"):
            load_reward(reward)


def test_reward_modules_default_to_built_ins_only():
    """Allow-list first: an operator environment without the variable (not only the chart's empty default)
    allows built-in rewards only; `*` is the admin's explicit choice."""
    assert TenantPolicy.from_env({}).reward_modules == ()
    doc = example("rif-grpo")
    doc["spec"]["tasks"][0]["reward"] = "team_rewards:score"
    with pytest.raises(SpecError, match="built-in rewards only"):
        validate_resource(doc, policy=TenantPolicy.from_env({}))
    validate_resource(doc, policy=TenantPolicy.from_env({"CPT_ALLOWED_REWARD_MODULES": "*"}))


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
