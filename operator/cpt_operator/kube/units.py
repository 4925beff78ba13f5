"""One admission unit per stage under a queue (`spec.queue`, TrainJob backend): the stage's vLLM rollout servers
are a replicated job of the stage's own TrainJob, beside the learner ranks. Pure builders, no I/O.

Without a queue, a task's rollout servers are a Deployment that lives across its stages (kube/manifests). Under a
queue that would be two workloads Kueue admits apart: servers holding GPUs while the learner waits in the queue,
or the reverse. Here each stage that generates with vLLM gets a namespaced TrainingRuntime of its own (named like
the job) with two replicated jobs, `node` (the learner ranks, as in the chart's `cpt-learner`) and `rollout` (the
servers, one Job of `rollout.replicas` pods), and a success policy on `node` alone. Kueue's TrainJob integration
admits the TrainJob with every pod set of its runtime as one workload; Trainer creates the JobSet only once it is
admitted, so while the unit waits neither servers nor learner pods exist. When the learner ranks finish, the
JobSet is complete and its other Jobs are stopped: the servers' GPUs go back with the learner's.

The learner reaches the servers through a headless Service per stage (selecting the stage's rollout pods by
their labels; a Service holds no quota, so it is created beside the unit, not inside it).
"""

from __future__ import annotations

import copy
from typing import Optional

from cpt_core import api
from cpt_core.stage import StageConfig
from cpt_operator.kube import jobs, manifests
from cpt_operator.kube.defaults import PlanDefaults
from cpt_operator.planner.intents import RolloutServers

ROLLOUT_JOB = "rollout"  # the servers' replicated job
TRAINER_ANCESTOR = "trainer.kubeflow.org/trainjob-ancestor-step"  # how Trainer finds the learner's job
MAX_REPLICATED_JOB_NAME = 20  # Trainer v2.4's limit on replicated-job names
SERVICE_SUFFIX = "-rollout"
assert max(len(jobs.TRAINJOB_NODE), len(ROLLOUT_JOB)) <= MAX_REPLICATED_JOB_NAME


def folds_servers(spec: api.CptSpec, defaults: PlanDefaults) -> bool:
    """Whether rollout servers go inside each stage's unit instead of a Deployment per task: under a queue, on
    either backend (TrainJob: a runtime of the stage's own, here; PyTorchJob: an AppWrapper, kube/wrapped)."""
    return bool(spec.queue) and defaults.job_backend in jobs.BACKENDS


def stage_uses_servers(spec: api.CptSpec, stage: str) -> bool:
    """Whether a stage generates through the servers: evaluate with evaluation.engine vllm; filter and train with
    rollout.engine vllm (SFT trains without generating)."""
    if stage == "evaluate":
        return spec.evaluation.engine == "vllm"
    if stage == "train" and spec.method in api.SFT_METHODS:
        return False
    return spec.rollout.engine == "vllm"


def service_name(job: str) -> str:
    """`<job>-rollout`: at most 58 characters (job names are capped at 50), a DNS-1035 label like the run's name."""
    return job + SERVICE_SUFFIX


def stage_rollout_url(resource: dict, job: str, defaults: PlanDefaults) -> str:
    namespace = resource["metadata"].get("namespace", "default")
    return f"dns+http://{service_name(job)}.{namespace}.svc:{defaults.rollout_port}"


def stage_selector(cfg: StageConfig) -> dict:
    """The labels of one stage's rollout pods (its Service selects them; the learner reaches only these)."""
    return {manifests.LABEL_RUN: cfg.run, manifests.LABEL_TASK: str(cfg.task_index),
            manifests.LABEL_COMPONENT: "rollout", manifests.LABEL_STAGE: cfg.stage,
            manifests.LABEL_ATTEMPT: str(cfg.attempt)}


def stage_service(resource: dict, job: str, cfg: StageConfig, defaults: PlanDefaults) -> dict:
    """Headless: the learner resolves every ready server of its stage (as the per-task Service does)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": manifests.child_metadata(resource, service_name(job),
                                             manifests.labels(cfg.run, cfg.task_index, "rollout", cfg.stage,
                                                              cfg.attempt)),
        "spec": {"selector": stage_selector(cfg), "clusterIP": "None",
                 "ports": [{"name": "http", "port": defaults.rollout_port, "targetPort": "http"}]},
    }


def stage_runtime(resource: dict, job: str, cfg: StageConfig, servers: RolloutServers,
                  defaults: PlanDefaults) -> dict:
    """The TrainingRuntime of one stage: the learner's `node` job and the servers' `rollout` job."""
    spec = cfg.spec
    deployment = manifests.rollout_deployment(resource, cfg.run, cfg.task_index, servers.model_uri, spec, defaults)
    pod = copy.deepcopy(deployment["spec"]["template"])
    pod["metadata"]["labels"].update(stage_selector(cfg))
    # A server that dies is restarted in place (the learner waits for it); the learner's job decides the stage.
    pod["spec"]["restartPolicy"] = "OnFailure"
    replicas = spec.rollout.replicas
    node = {"name": jobs.TRAINJOB_NODE,
            "template": {"metadata": {"labels": {TRAINER_ANCESTOR: "trainer"}},
                         "spec": {"backoffLimit": 0, "template": {"spec": {
                             "restartPolicy": "Never", "automountServiceAccountToken": False,
                             "enableServiceLinks": False,
                             "containers": [{"name": jobs.TRAINJOB_NODE,
                                             "image": spec.learner.image or defaults.learner_image,
                                             "imagePullPolicy": defaults.image_pull_policy}]}}}}}
    rollout = {"name": ROLLOUT_JOB, "replicas": 1,
               "template": {"spec": {"parallelism": replicas, "completions": replicas, "backoffLimit": 6,
                                     "template": pod}}}
    return {
        "apiVersion": f"{jobs.TRAINER_API}/v1alpha1",
        "kind": "TrainingRuntime",
        "metadata": manifests.child_metadata(resource, job, {
            **manifests.labels(cfg.run, cfg.task_index, "learner", cfg.stage, cfg.attempt),
            "trainer.kubeflow.org/framework": "torch"}),
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {}},
            "template": {"spec": {
                # The stage is done when the learner is; the JobSet then stops the servers.
                "successPolicy": {"operator": "All", "targetReplicatedJobs": [jobs.TRAINJOB_NODE]},
                "replicatedJobs": [node, rollout],
            }},
        },
    }


def stage_servers(cfg: StageConfig, rollout: list[RolloutServers]) -> Optional[RolloutServers]:
    """The servers the planner wants for this stage's task, if this stage generates through them."""
    if not stage_uses_servers(cfg.spec, cfg.stage):
        return None
    return next((s for s in rollout if s.task_index == cfg.task_index and s.start), None)


def with_stage_url(resource: dict, job: str, cfg: StageConfig, servers: Optional[RolloutServers],
                   defaults: PlanDefaults) -> StageConfig:
    """The stage config pointing at the stage's own servers (none: no rollout URL, the stage generates in-process
    or not at all)."""
    url = stage_rollout_url(resource, job, defaults) if servers is not None else None
    return cfg.model_copy(update={"rollout_url": url})


def stage_unit(resource: dict, job: str, cfg: StageConfig, servers: Optional[RolloutServers],
               defaults: PlanDefaults) -> list[dict]:
    """What a stage under a queue is created as: the runtime and Service first, then the TrainJob that refers to
    them (the only object Kueue admits). A stage without servers is its TrainJob alone. `cfg` comes from
    with_stage_url."""
    if servers is None:
        return [jobs.trainjob(resource, job, cfg, defaults)]
    trainjob = jobs.trainjob(resource, job, cfg, defaults)
    trainjob["spec"]["runtimeRef"] = {"name": job, "kind": "TrainingRuntime", "apiGroup": jobs.TRAINER_API}
    return [stage_runtime(resource, job, cfg, servers, defaults), stage_service(resource, job, cfg, defaults),
            trainjob]
