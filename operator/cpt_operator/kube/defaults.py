"""Defaults the planner fills in when the spec leaves them out; the operator's settings override them from env."""

from __future__ import annotations

from dataclasses import dataclass, field

from cpt_operator.kube.ownership import default_key
from cpt_operator.kube.settings_table import (  # noqa: F401  (re-exported: where callers look for them)
    IMAGE_REPOSITORY, LEARNER_IMAGE, OPERATOR_IMAGE, ROLLOUT_IMAGE, default_value as _d)


@dataclass(frozen=True)
class PlanDefaults:
    """Cluster-wide choices that are not part of a run's spec. Each default is its row's in kube/settings_table.py
    (CPT_LEARNER_IMAGE, CPT_ROLLOUT_PORT, ...), declared there once."""

    learner_image: str = _d("plan_defaults.learner_image")
    rollout_image: str = _d("plan_defaults.rollout_image")
    learner_service_account: str | None = _d("plan_defaults.learner_service_account")
    image_pull_policy: str = _d("plan_defaults.image_pull_policy")
    rollout_port: int = _d("plan_defaults.rollout_port")
    network_policies: bool = _d("plan_defaults.network_policies")  # a NetworkPolicy per run
    job_backend: str = _d("plan_defaults.job_backend")  # pytorchjob | trainjob (kube.jobs.BACKENDS)
    training_runtime: str = _d("plan_defaults.training_runtime")  # the ClusterTrainingRuntime TrainJobs refer to
    # Where the storage endpoint's addresses are: the runs' pods reach storage only there; empty: on its port at
    # any address (manifests._storage_egress).
    storage_cidrs: tuple[str, ...] = _d("plan_defaults.storage_cidrs")
    # The operator's secret (kube.ownership): marks its children and derives the private child names.
    child_key: bytes = field(default_factory=default_key, repr=False)
