"""Defaults the planner fills in when the spec leaves them out; the operator's settings override them from env."""

from __future__ import annotations

from dataclasses import dataclass, field

from cpt_operator import __version__
from cpt_operator.kube.ownership import default_key

IMAGE_REPOSITORY = "ghcr.io/cpt-operator"
OPERATOR_IMAGE = f"{IMAGE_REPOSITORY}/operator:{__version__}"
LEARNER_IMAGE = f"{IMAGE_REPOSITORY}/learner:{__version__}"
ROLLOUT_IMAGE = f"{IMAGE_REPOSITORY}/rollout:{__version__}"


@dataclass(frozen=True)
class PlanDefaults:
    """Cluster-wide choices that are not part of a run's spec."""

    learner_image: str = LEARNER_IMAGE
    rollout_image: str = ROLLOUT_IMAGE
    learner_service_account: str | None = None
    image_pull_policy: str = "IfNotPresent"
    rollout_port: int = 8000
    network_policies: bool = True  # a NetworkPolicy per run (chart: networkPolicy.enabled)
    job_backend: str = "pytorchjob"  # pytorchjob | trainjob: the kind stage jobs run as (kube.jobs.BACKENDS)
    training_runtime: str = "cpt-learner"  # the ClusterTrainingRuntime TrainJobs refer to (the chart installs it)
    # Where the storage endpoint's addresses are (chart networkPolicy.storageCIDRs): the runs' pods reach storage
    # only there; empty: on its port at any address (manifests._storage_egress).
    storage_cidrs: tuple[str, ...] = ()
    # The operator's secret (kube.ownership): marks its children and derives the private child names.
    child_key: bytes = field(default_factory=default_key, repr=False)
