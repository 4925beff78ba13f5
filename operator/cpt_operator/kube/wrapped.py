"""One admission unit per stage under a queue, PyTorchJob backend: an AppWrapper (workload.codeflare.dev/v1beta2,
Kueue's built-in `AppWrapper` integration since Kueue 0.11, AppWrapper controller >= 1.1) that wraps the stage's
vLLM rollout servers and its PyTorchJob. Pure builders, no I/O.

Without a queue a task's servers are a Deployment across its stages (kube/manifests); with one, the Deployment and
the PyTorchJob would be two workloads that Kueue admits apart. Here only the AppWrapper carries the queue label.
Kueue holds it suspended; the AppWrapper controller creates its components only once it is admitted and deletes
them when it is suspended again (a run's `spec.suspend`, a preemption) or deleted, so while the unit waits
neither servers nor learner pods exist, and both go back together.

An AppWrapper succeeds (and gives its quota back) only when every pod of it has exited 0. A Deployment's pods
never do, so the servers are a batch/v1 Job (`<job>-rollout`, `rollout.replicas` pods) whose servers mount a
stop route (cpt_core.rollout.STOPPABLE_ENV) and the learner calls it on every server of its stage when it ends
(STOP_AT_END_ENV): learner and servers then exit 0 and the AppWrapper is Succeeded, which is the phase the
operator reads as the stage's (kube.jobs.appwrapper_phase). A learner that fails fails the PyTorchJob; the
AppWrapper, whose retry limit is 0 here (a stage's retries are the operator's: a new attempt, a new name), is
then Failed and deletes both components.

The wrapped objects are created by the AppWrapper controller, owned by the AppWrapper (its controller
reference), not by the run: they carry the run's labels (NetworkPolicy, Service selector, metrics) and the
operator's mark (kube.ownership, signed here over their kind, name and labels), but the operator never takes them
for stage jobs of its own: a child must be owned by the run's uid and marked (client.list_children, the
informer). The AppWrapper is the stage job. The learner finds its servers through the stage's headless Service
(kube.units.stage_service), created beside the unit: a Service holds no quota.
"""

from __future__ import annotations

import copy
from typing import Optional

from cpt_core import rollout
from cpt_core.stage import StageConfig
from cpt_operator.kube import jobs, manifests, ownership, units
from cpt_operator.kube.defaults import PlanDefaults
from cpt_operator.planner.intents import RolloutServers

ANNOTATION_PREFIX = "workload.codeflare.dev.appwrapper"
# Retries are the operator's (a new attempt under a new name); the controller's own would rerun a learner that
# failed, in place, behind the operator's back.
RETRY_LIMIT = f"{ANNOTATION_PREFIX}/retryLimit"
# Pods must run within this of the unit's admission (the controller's default, 5 minutes, is shorter than a
# vLLM image pull on a fresh GPU node; its own cap is 24 hours).
WARMUP_GRACE = f"{ANNOTATION_PREFIX}/warmupGracePeriodDuration"
ANNOTATIONS = {RETRY_LIMIT: "0", WARMUP_GRACE: "30m"}
SERVER_BACKOFF_LIMIT = 6  # a server that keeps crashing fails its Job, and with it the unit


def _env(container: dict, name: str) -> None:
    container.setdefault("env", []).append({"name": name, "value": "1"})


def _wrapped(obj: dict, resource: dict, defaults: PlanDefaults) -> dict:
    """A component template: no ownerReferences (the AppWrapper controller sets itself as the controller, and
    would refuse a second one), the run's labels, the operator's mark."""
    obj = copy.deepcopy(obj)
    obj["metadata"].pop("ownerReferences", None)
    return ownership.sign(defaults.child_key, obj, resource["metadata"].get("uid") or "")


def server_job(resource: dict, job: str, cfg: StageConfig, servers: RolloutServers, defaults: PlanDefaults) -> dict:
    """The stage's rollout servers as a batch/v1 Job: the per-task Deployment's pod (image, flags, key, labels,
    security settings), labelled with the stage and attempt the stage's Service selects, stoppable."""
    spec = cfg.spec
    deployment = manifests.rollout_deployment(resource, cfg.run, cfg.task_index, servers.model_uri, spec, defaults)
    pod = copy.deepcopy(deployment["spec"]["template"])
    pod["metadata"]["labels"].update(units.stage_selector(cfg))
    pod["spec"]["restartPolicy"] = "OnFailure"  # a crashed server restarts in place (the learner waits for it)
    for container in pod["spec"]["containers"]:
        _env(container, rollout.STOPPABLE_ENV)
    replicas = spec.rollout.replicas
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": manifests.child_metadata(resource, units.service_name(job), manifests.labels(
            cfg.run, cfg.task_index, "rollout", cfg.stage, cfg.attempt)),
        "spec": {"parallelism": replicas, "completions": replicas, "backoffLimit": SERVER_BACKOFF_LIMIT,
                 "template": pod},
    }


def learner_job(resource: dict, job: str, cfg: StageConfig, defaults: PlanDefaults) -> dict:
    """The stage's PyTorchJob as without a queue, whose ranks stop the stage's servers when they are done."""
    pytorchjob = copy.deepcopy(manifests.pytorchjob(resource, job, cfg, defaults))
    for replica in pytorchjob["spec"]["pytorchReplicaSpecs"].values():
        for container in replica["template"]["spec"]["containers"]:
            _env(container, rollout.STOP_AT_END_ENV)
    return pytorchjob


def appwrapper(resource: dict, job: str, cfg: StageConfig, servers: RolloutServers, defaults: PlanDefaults) -> dict:
    """The unit: servers first (the controller creates components in order; the learner waits for servers
    anyway), then the learner. Named like the stage job, labelled like it: it is the stage job."""
    metadata = manifests.child_metadata(resource, job, manifests.labels(cfg.run, cfg.task_index, "learner",
                                                                        cfg.stage, cfg.attempt))
    metadata["annotations"] = dict(ANNOTATIONS)
    return {
        "apiVersion": jobs.APPWRAPPER.api_version,
        "kind": jobs.APPWRAPPER.kind,
        "metadata": metadata,
        "spec": {"suspend": False, "components": [
            {"template": _wrapped(server_job(resource, job, cfg, servers, defaults), resource, defaults)},
            {"template": _wrapped(learner_job(resource, job, cfg, defaults), resource, defaults)},
        ]},
    }


def stage_unit(resource: dict, job: str, cfg: StageConfig, servers: Optional[RolloutServers],
               defaults: PlanDefaults) -> list[dict]:
    """What a stage under a queue is created as on the PyTorchJob backend: the stage's Service, then its
    AppWrapper (the only object Kueue admits). A stage without servers is its PyTorchJob alone. `cfg` comes
    from units.with_stage_url."""
    if servers is None:
        return [manifests.pytorchjob(resource, job, cfg, defaults)]
    return [units.stage_service(resource, job, cfg, defaults), appwrapper(resource, job, cfg, servers, defaults)]
