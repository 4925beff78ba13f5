"""The planner's intents as Kubernetes children: what to create, patch and delete (pure, no API calls).

A stage to start becomes its ConfigMap (the stage config) and PyTorchJob; rollout servers to start become a
Deployment and Service (under a queue: inside each stage's unit instead, kube/units and kube/wrapped); new pods are preceded by the run's NetworkPolicy and, for rollout servers, the run's
rollout key Secret (sent only with new pods: they are never listed, and a 409 on them is checked for the owner);
rollout servers of any other task are deleted (they hold GPUs); a suspension becomes a merge patch of the job's
runPolicy. `client.apply` then makes the cluster match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from cpt_core.api import CptSpec
from cpt_operator.kube import jobs, manifests, units, wrapped
from cpt_operator.kube.defaults import PlanDefaults
from cpt_operator.planner.intents import Plan
from cpt_operator.planner.names import rollout_name


@dataclass(frozen=True)
class ChildRef:
    api_version: str
    kind: str
    name: str


@dataclass
class Changes:
    create: list[dict] = field(default_factory=list)
    patch: list[tuple[ChildRef, dict]] = field(default_factory=list)  # merge patches for existing children
    delete: list[ChildRef] = field(default_factory=list)


def render(plan: Plan, resource: dict, present: Iterable[tuple[str, str]],
           defaults: PlanDefaults = PlanDefaults()) -> Changes:
    """Children for `plan`; `present` is the (kind, name) of every child observed now (for deletions)."""
    out = Changes()
    spec = plan.spec
    backend = jobs.BACKENDS[defaults.job_backend]
    present = set(present)
    # A job keeps its kind: one of the other backend's (made before CPT_JOB_BACKEND changed) is patched as such.
    kind_of = {name: jobs.BY_KIND[kind] for kind, name in present if kind in jobs.BY_KIND and kind != backend.kind}
    kind_of.update({name: backend for kind, name in present if kind == backend.kind})
    suspensions = [(ChildRef(kind.api_version, kind.kind, job.job), jobs.suspend_patch(kind, job.suspended))
                   for job in plan.suspend for kind in [kind_of.get(job.job, backend)]]
    if spec is None:  # an invalid spec: create and delete nothing; stop what runs (GPUs) until it is fixed
        out.patch = suspensions + [(ChildRef("apps/v1", kind, name), {"spec": {"replicas": 0}})
                                   for kind, name in sorted(present) if kind == "Deployment"]  # rollout servers
        return out
    if plan.hold:  # the planner could not see everything (storage): only the suspensions it asks for
        out.patch = suspensions
        return out
    run = resource["metadata"]["name"]
    urls = {}
    fold = units.folds_servers(spec, defaults)  # under a queue: each stage's servers inside its own unit
    for servers in ([] if fold else plan.rollout):
        if servers.start:
            out.create.append(jobs.with_queue(manifests.rollout_deployment(
                resource, run, servers.task_index, servers.model_uri, spec, defaults), spec.queue))
            out.create.append(manifests.rollout_service(resource, run, servers.task_index, defaults))
        urls[servers.task_index] = manifests.rollout_url(resource, run, servers.task_index, defaults)
    for servers in plan.rollout:  # servers that exist follow the intent: none while suspended (they hold GPUs)
        name = rollout_name(run, servers.task_index)
        if ("Deployment", name) in present:
            size = spec.rollout.replicas if servers.start else 0
            out.patch.append((ChildRef("apps/v1", "Deployment", name), {"spec": {"replicas": size}}))
    for start in plan.start:
        cfg = start.config
        servers = units.stage_servers(cfg, plan.rollout) if fold else None
        if fold:
            cfg = units.with_stage_url(resource, start.job, cfg, servers, defaults)
        elif cfg.task_index in urls:
            cfg = cfg.model_copy(update={"rollout_url": urls[cfg.task_index]})
        out.create.append(manifests.stage_configmap(resource, start.job, cfg, defaults))
        if start.job in kind_of:  # it exists (of either kind): never a second job of the same stage and attempt
            continue
        if fold:
            unit = wrapped.stage_unit if backend is jobs.PYTORCHJOB else units.stage_unit
            *parts, job = unit(resource, start.job, cfg, servers, defaults)
            out.create += parts
            out.create.append(jobs.with_round(jobs.with_queue(job, spec.queue), start.round))
            continue
        out.create.append(jobs.with_round(jobs.with_queue(backend.build(resource, start.job, cfg, defaults),
                                                          spec.queue), start.round))
    out.create = _isolation(resource, run, spec, out.create, present, defaults) + out.create
    out.patch.extend(suspensions)
    wanted = set() if fold else {rollout_name(run, s.task_index) for s in plan.rollout}
    servers_of_run = {rollout_name(run, index) for index in range(0, len(spec.tasks) + 1)}
    for kind, name in sorted(present):
        if kind in ("Deployment", "Service") and name in servers_of_run and name not in wanted:
            out.delete.append(ChildRef("apps/v1" if kind == "Deployment" else "v1", kind, name))
    return out


def _isolation(resource: dict, run: str, spec: CptSpec, creates: list[dict], present: set,
               defaults: PlanDefaults) -> list[dict]:
    """The run's NetworkPolicy and rollout key, created before any new pod of the run can start."""
    new_pods = {o["kind"] for o in creates if o["kind"] in ("Deployment", *jobs.BY_KIND)
                and (o["kind"], o["metadata"]["name"]) not in present}
    out = []
    if new_pods and defaults.network_policies:
        out.append(manifests.run_network_policy(resource, run, spec, defaults))
    if "Deployment" in new_pods or any(o["kind"] in ("TrainingRuntime", "AppWrapper") for o in creates):  # servers
        out.append(manifests.rollout_key_secret(resource, run, defaults))
    return out
