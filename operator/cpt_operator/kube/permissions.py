"""Every API permission the operator needs: the chart's RBAC is tested to cover exactly this list.

Owned by `rest` (the REST client and the informer's watch streams) and `kopf_adapter` (what kopf watches). When either
starts using a new verb, add it here: tests/operator/test_permissions.py runs a full life cycle (create, suspend,
resume, finish, delete) on the emulator and checks that the verbs used and the verbs listed are the same.
"""

from __future__ import annotations

from cpt_core import api
from cpt_operator.kube import jobs

Rule = tuple[str, str, tuple[str, ...]]  # (apiGroup, resource, verbs)


def job_rule(job_backend: str) -> Rule:
    """Stage jobs of the configured backend (CPT_JOB_BACKEND): the children's informer lists and watches them
    (cache and wake-ups), kube creates them and patches suspend."""
    backend = jobs.BACKENDS[job_backend]
    return backend.api_version.split("/")[0], backend.plural, ("get", "list", "watch", "create", "patch")


def other_job_rule(job_backend: str) -> Rule:
    """The other backend's kind: watched (never created) so that after CPT_JOB_BACKEND changed a stage job of the
    old kind is still seen and no stage runs twice; patched only to suspend such a job."""
    other = next(b for name, b in jobs.BACKENDS.items() if name != job_backend)
    return other.api_version.split("/")[0], other.plural, ("list", "watch", "patch")


def required_rules(job_backend: str = "pytorchjob") -> list[Rule]:
    """Every rule the operator needs with this job backend."""
    swap = {job_rule("pytorchjob"): job_rule(job_backend), other_job_rule("pytorchjob"): other_job_rule(job_backend)}
    pytorchjob_only = () if job_backend == jobs.PYTORCHJOB.name else (APPWRAPPER_RULE, WRAPPED_JOB_RULE)
    return [swap.get(rule, rule) for rule in REQUIRED_RULES if rule not in pytorchjob_only] + (
        [UNIT_RUNTIME_RULE] if job_backend == jobs.TRAINJOB.name else [])


# TrainJob backend: a stage under a queue with rollout servers gets its own TrainingRuntime (kube/units), created
# once and never listed; `get` for the owner check of a 409.
UNIT_RUNTIME_RULE: Rule = ("trainer.kubeflow.org", "trainingruntimes", ("get", "create"))

# PyTorchJob backend: a stage under a queue with rollout servers is an AppWrapper (kube/wrapped), the stage job
# of that stage: watched (optional: the CRD may be absent), created, patched to suspend; `get` for a 409.
APPWRAPPER_RULE: Rule = ("workload.codeflare.dev", "appwrappers", ("get", "list", "watch", "create", "patch"))
# Never used by the operator itself: the AppWrapper webhook's SubjectAccessReview asks whether the creator of an
# AppWrapper may create each wrapped kind (the servers' batch/v1 Job; the PyTorchJob is granted anyway); the
# AppWrapper controller creates them.
WRAPPED_JOB_RULE: Rule = ("batch", "jobs", ("create",))


# With the default backend (pytorchjob).
REQUIRED_RULES: list[Rule] = [
    # kopf lists/watches it (a pass reads kopf's copy); kube GETs it only to report a failed pass. `patch`: kopf
    # removes the finalizer an older version of the operator added (this one adds none).
    (api.GROUP, api.PLURAL, ("get", "list", "watch", "patch")),
    (api.GROUP, f"{api.PLURAL}/status", ("patch",)),
    # Stage jobs: the informer watches them (cache, wake-ups), kube creates and patches runPolicy.suspend. `get` on
    # every created kind: the owner check of a 409 (a foreign object with a child's name is never adopted).
    ("kubeflow.org", "pytorchjobs", ("get", "list", "watch", "create", "patch")),
    # The other backend's kind, watched only (other_job_rule): a backend switch never runs a stage twice.
    ("trainer.kubeflow.org", "trainjobs", ("list", "watch", "patch")),
    APPWRAPPER_RULE, WRAPPED_JOB_RULE,  # (pytorchjob backend only: stages under a queue, kube/wrapped)
    # Rollout servers: created per task, deleted when the task is committed, patched to 0 replicas while the run
    # is suspended or its spec invalid (the GPUs they hold are released) and back up on resume. Every child kind
    # that is read back is listed and watched by the informer (controller/informer.py: the cache a pass reads).
    ("apps", "deployments", ("get", "list", "watch", "create", "patch", "delete")),
    ("", "services", ("get", "list", "watch", "create", "delete")),
    ("", "configmaps", ("get", "list", "watch", "create")),
    # Never listed: `get` by name (spec.storage.secretRef, owner checks); create: the run's rollout key.
    ("", "secrets", ("get", "create")),
    # The per-run NetworkPolicy, sent with a new pod unless the watch-fed cache holds it (409 -> owner check).
    ("networking.k8s.io", "networkpolicies", ("get", "list", "watch", "create")),
    # create: the run's events; list (never watched): Warning events of Pending stage jobs (controller.admission)
    ("", "events", ("create", "list")),
    # kopf itself: discovers custom resources cluster-wide; namespaces only when CPT_NAMESPACES has globs.
    ("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch")),
    ("", "namespaces", ("list", "watch")),
]

# Used only in some configurations (see the comments above); the exactness test does not expect them.
CONDITIONAL_RULES: set[tuple[str, str, str]] = {
    ("", "namespaces", "list"), ("", "namespaces", "watch"),
    # only while a stage job stays Pending past CPT_ADMISSION_GRACE (controller.admission; tests/operator/test_admission)
    ("", "events", "list"),
    # the resource is read from kopf's watch; a GET only when a failed pass is reported
    (api.GROUP, api.PLURAL, "get"),
    # only on resources that still carry an older operator's finalizer
    (api.GROUP, api.PLURAL, "patch"),
    # only while a run is suspended with a job of the backend used before CPT_JOB_BACKEND changed
    ("trainer.kubeflow.org", "trainjobs", "patch"),
    # owner checks happen only on a 409 (an operator restart mid-pass, or a foreign object)
    ("kubeflow.org", "pytorchjobs", "get"), ("apps", "deployments", "get"), ("", "services", "get"),
    # only for a run with a queue and rollout servers, on the PyTorchJob backend (kube/wrapped); batch jobs:
    # checked by the AppWrapper webhook, never called
    ("workload.codeflare.dev", "appwrappers", "create"), ("workload.codeflare.dev", "appwrappers", "patch"),
    ("workload.codeflare.dev", "appwrappers", "get"), ("batch", "jobs", "create"),
    # only for a run with a queue and rollout servers, on the TrainJob backend (kube/units)
    ("trainer.kubeflow.org", "trainingruntimes", "create"), ("trainer.kubeflow.org", "trainingruntimes", "get"),
    ("", "configmaps", "get"), ("networking.k8s.io", "networkpolicies", "get"),
}
