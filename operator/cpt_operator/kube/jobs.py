"""The two kinds a stage can run as on a cluster: PyTorchJob (kubeflow.org/v1, the training-operator) and
TrainJob (trainer.kubeflow.org/v1alpha1, Kubeflow Trainer v2). Pure: building, suspending and reading one.

The planner never sees the difference: it asks for a stage; `children` builds it with the backend the operator
is configured for (`CPT_JOB_BACKEND`), and `client` reads either kind back into the same ObservedJob.

Queues (Kueue): with `spec.queue` the job carries the `kueue.x-k8s.io/queue-name` label and Kueue keeps it
suspended until it admits it. The operator marks the suspensions it makes itself (SUSPENDED_BY), so it resumes
only those and never fights Kueue over a job that waits for admission (such a job is observed as `queued`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from cpt_core import api
from cpt_core.stage import STAGE_CONFIG_FILE, StageConfig
from cpt_operator.kube import manifests
from cpt_operator.kube.defaults import PlanDefaults

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
SUSPENDED_BY = f"{api.GROUP}/suspended-by-operator"  # annotation: "true" on a job this operator suspended
TRAINER_API = "trainer.kubeflow.org"
TRAINJOB_NODE = "node"  # the replicated job and container name of Trainer's torch runtimes
PATCH_MANAGER = f"{api.GROUP}/operator"
# Label of a stage job that redoes a damaged task from its first stage (planner.position): the round, 1, 2, ...
# Absent on round 0, so jobs created before it existed read as round 0.
LABEL_ROUND = f"{api.GROUP}/round"


@dataclass(frozen=True)
class Backend:
    """What differs between the job kinds."""

    name: str
    kind: str
    api_version: str
    plural: str
    build: Callable[[dict, str, StageConfig, PlanDefaults], dict]
    suspend_path: tuple[str, ...]  # where `suspend: bool` lives in the object
    phase: Callable[[dict], tuple[str, Optional[dict]]]  # (Pending|Running|Succeeded|Failed, deciding condition)


def with_queue(obj: dict, queue: Optional[str]) -> dict:
    """Put the Kueue queue label on a child (and on a Deployment's pods), if the run names a queue."""
    if queue:
        obj["metadata"].setdefault("labels", {})[QUEUE_LABEL] = queue
        template = (obj.get("spec") or {}).get("template")
        if obj.get("kind") == "Deployment" and isinstance(template, dict):
            template.setdefault("metadata", {}).setdefault("labels", {})[QUEUE_LABEL] = queue
    return obj


def with_round(obj: dict, round_: int) -> dict:
    """Label a stage job with its round (only a redo, round > 0, carries the label)."""
    if round_:
        obj["metadata"].setdefault("labels", {})[LABEL_ROUND] = str(round_)
    return obj


def round_of(obj: dict) -> int:
    value = str(((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_ROUND, "0"))
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 4 else 0


def suspend_patch(backend: Backend, suspended: bool) -> dict:
    """Merge patch that suspends or resumes a job, marking (or unmarking) it as suspended by the operator."""
    body: dict = {"suspend": suspended}
    for key in reversed(backend.suspend_path[:-1]):
        body = {key: body}
    return {"metadata": {"annotations": {SUSPENDED_BY: "true" if suspended else None}}, **body}


def is_suspended(backend: Backend, obj: dict) -> bool:
    node = obj
    for key in backend.suspend_path:
        node = node.get(key) if isinstance(node, dict) else None
    return bool(node)


def suspended_by_operator(obj: dict) -> bool:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(SUSPENDED_BY) == "true"


def _true_conditions(obj: dict) -> dict[str, dict]:
    conditions = [c for c in (obj.get("status") or {}).get("conditions") or [] if isinstance(c, dict)]
    return {c.get("type"): c for c in conditions if str(c.get("status")) == "True"}


def pytorchjob_phase(obj: dict) -> tuple[str, Optional[dict]]:
    """The terminal condition wins, then Running, else Pending."""
    true = _true_conditions(obj)
    for phase in ("Failed", "Succeeded", "Running"):
        if phase in true:
            return phase, true[phase]
    return "Pending", None


def trainjob_phase(obj: dict) -> tuple[str, Optional[dict]]:
    """TrainJob conditions are Complete / Failed / Suspended (and Created); running = an active child Job."""
    true = _true_conditions(obj)
    if "Failed" in true:
        return "Failed", true["Failed"]
    if "Complete" in true:
        return "Succeeded", true["Complete"]
    jobs = (obj.get("status") or {}).get("jobsStatus") or []
    if any(isinstance(j, dict) and (j.get("active") or 0) > 0 for j in jobs):
        return "Running", None
    return "Pending", None


def trainjob(resource: dict, name: str, cfg: StageConfig, defaults: PlanDefaults) -> dict:
    """A TrainJob on the operator's ClusterTrainingRuntime (the chart installs it: torch distributed, the
    learner image, no ServiceAccount token). Torch's runtime sets torchrun's PET_* variables (nodes, processes
    per node, rank, master), so the command is a bare `torchrun -m ...`. What is per stage (the stage config
    volume, the pod's labels and security settings) goes in as a runtime patch owned by the operator."""
    pod = manifests.learner_pod(resource, cfg, name, defaults)
    container = pod["spec"]["containers"][0]
    trainer = {
        "image": container["image"],
        "command": ["torchrun", "-m", "cpt_trainer.cli", cfg.stage, "--config",
                    f"{manifests.CONFIG_MOUNT}/{STAGE_CONFIG_FILE}"],
        "env": container["env"],
        "numNodes": cfg.spec.learner.replicas,
        "numProcPerNode": cfg.spec.learner.processes_per_replica,
        "resourcesPerNode": container["resources"],
    }
    pod_spec = pod["spec"]
    patch_pod: dict = {
        "containers": [{"name": TRAINJOB_NODE, "volumeMounts": container["volumeMounts"],
                        "securityContext": container["securityContext"]}],
        "volumes": pod_spec["volumes"],
        "securityContext": pod_spec["securityContext"],
    }
    if pod_spec.get("serviceAccountName"):
        patch_pod["serviceAccountName"] = pod_spec["serviceAccountName"]
    patch = {"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
        "name": TRAINJOB_NODE,
        "template": {"spec": {"template": {"metadata": {"labels": pod["metadata"]["labels"]}, "spec": patch_pod}}},
    }]}}}}
    job_labels = manifests.labels(cfg.run, cfg.task_index, "learner", cfg.stage, cfg.attempt)
    return {
        "apiVersion": f"{TRAINER_API}/v1alpha1",
        "kind": "TrainJob",
        "metadata": manifests.child_metadata(resource, name, job_labels),
        "spec": {
            "runtimeRef": {"name": defaults.training_runtime, "kind": "ClusterTrainingRuntime",
                           "apiGroup": TRAINER_API},
            "suspend": False,
            "trainer": trainer,
            "runtimePatches": [patch],
        },
    }


def appwrapper_phase(obj: dict) -> tuple[str, Optional[dict]]:
    """An AppWrapper's status.phase (the AppWrapper controller's): Succeeded once every wrapped pod has succeeded
    (the learner's, and the servers' that the learner stopped), Failed once it gave up (its retry limit is 0 here:
    retries are the operator's), Running while its components run; Suspended, Resuming, Resetting, Suspending
    and the empty phase are Pending (`spec.suspend` then tells a queue wait from the operator's own suspension)."""
    status = obj.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    phase = status.get("phase") or ""
    if phase == "Failed":
        return "Failed", conditions.get("Unhealthy") or conditions.get("QuotaReserved")
    if phase == "Succeeded":  # QuotaReserved turned False (reason Succeeded) when it succeeded
        return "Succeeded", conditions.get("QuotaReserved") or conditions.get("ResourcesDeployed")
    if phase == "Running":
        return "Running", None
    return "Pending", None


def _built_as_unit(resource: dict, name: str, cfg: StageConfig, defaults: PlanDefaults) -> dict:
    raise TypeError("an AppWrapper wraps a stage's servers and learner: kube.wrapped.stage_unit builds it")


PYTORCHJOB = Backend("pytorchjob", "PyTorchJob", "kubeflow.org/v1", "pytorchjobs", manifests.pytorchjob,
                     ("spec", "runPolicy", "suspend"), pytorchjob_phase)
TRAINJOB = Backend("trainjob", "TrainJob", f"{TRAINER_API}/v1alpha1", "trainjobs", trainjob, ("spec", "suspend"),
                   trainjob_phase)
# Not a backend of its own: under a queue, the PyTorchJob backend's stages with rollout servers are AppWrappers
# (kube/wrapped), observed, suspended and fingerprinted like any stage job.
APPWRAPPER_API = "workload.codeflare.dev"
APPWRAPPER = Backend("appwrapper", "AppWrapper", f"{APPWRAPPER_API}/v1beta2", "appwrappers", _built_as_unit,
                     ("spec", "suspend"), appwrapper_phase)
BACKENDS: dict[str, Backend] = {b.name: b for b in (PYTORCHJOB, TRAINJOB)}
# The unit kinds each backend may create besides its own job kind (watched optionally: the CRD may be absent).
UNIT_KINDS: dict[str, tuple[Backend, ...]] = {PYTORCHJOB.name: (APPWRAPPER,), TRAINJOB.name: ()}
BY_KIND: dict[str, Backend] = {b.kind: b for b in (*BACKENDS.values(), APPWRAPPER)}


def unit_kinds(job_kind: str) -> tuple[str, ...]:
    """The kinds a backend's stages may also run as (PyTorchJob: AppWrapper), by the backend's job kind."""
    return next((tuple(u.kind for u in UNIT_KINDS[b.name]) for b in BACKENDS.values() if b.kind == job_kind), ())


def job_fingerprint(body: dict, default: "Backend") -> tuple:
    """What the planner reads of a job (observe.observed_job): its phase, suspension (and by whom), deletion.
    A job's watch event wakes its run only when this changed."""
    backend = BY_KIND.get(body.get("kind") or "", default)
    phase, _ = backend.phase(body)
    return (phase, is_suspended(backend, body), suspended_by_operator(body),
            bool((body.get("metadata") or {}).get("deletionTimestamp")))
