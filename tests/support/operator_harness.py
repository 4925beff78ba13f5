"""What the operator tests do to the world, through the Kubernetes API only (so a real cluster can stand in).

`World` plays the user (apply, suspend, delete), the Kubeflow training operator (mark a PyTorchJob Succeeded or
Failed through its /status subresource) and the trainer (commit a task's results to storage through the storage
layer, as the evaluate stage would).
"""

from __future__ import annotations

import contextlib
import os

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Optional

import boto3
import kubernetes
from botocore.config import Config

from cpt_core import api
from cpt_operator import planner
from cpt_operator.kube import jobs
from cpt_core.validation import validate_resource
from cpt_core.storage import commit_task, layout, open_store

GROUP, VERSION, PLURAL = api.GROUP, api.VERSION, api.PLURAL
# The stage-job kind under test: the operator's CPT_JOB_BACKEND (`make test` runs the lifecycle, restart and
# fault tests once per backend). The fake job controller below speaks that kind's conditions.
JOB_BACKEND = jobs.BACKENDS[os.environ.get("CPT_JOB_BACKEND") or "pytorchjob"]
JOBS = (*JOB_BACKEND.api_version.split("/"), JOB_BACKEND.plural)
JOB_KIND = JOB_BACKEND.kind
# Terminal condition types of the job kind: PyTorchJob Succeeded/Failed, TrainJob Complete/Failed.
DONE = {"Succeeded": "Succeeded" if JOB_KIND == "PyTorchJob" else "Complete", "Failed": "Failed"}


REQUEST_TIMEOUT = (5, 60)  # (connect, read) seconds: a wedged server fails the test in a minute, not at pytest's 900 s


def api_client(kubeconfig: str) -> kubernetes.client.ApiClient:
    """A client whose every request is bounded by REQUEST_TIMEOUT unless the call sets its own."""
    client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    call_api = client.call_api

    def bounded_call_api(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = REQUEST_TIMEOUT
        return call_api(*args, **kwargs)

    client.call_api = bounded_call_api  # type: ignore[method-assign]
    return client


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def accuracy(row: int, task: int) -> float:
    """The fake trainer's a[row][task]: learned when trained (row >= task), a little forgetting afterwards."""
    if row < task or task == 0:
        return round(0.2 + 0.01 * task, 4)
    return round(0.8 - 0.05 * (row - task) + 0.01 * task, 4)


def new_bucket(endpoint: str) -> str:
    name = f"cpt-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing",
                 config=Config(s3={"addressing_style": "path"})).create_bucket(Bucket=name)
    return name


def cpt_body(name: str, endpoint: str, bucket: str, tasks: int = 3, method: str = "sft", **spec: Any) -> dict:
    body = {
        "apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name},
        "spec": {
            "model": "s3://models/tiny/", "method": method,
            "tasks": [{"name": f"t{i}", "train": f"s3://data/t{i}/train.jsonl",
                       "eval": f"s3://data/t{i}/eval.jsonl", "reward": "exact"} for i in range(1, tasks + 1)],
            "general": [{"name": "gen", "eval": "s3://data/gen/eval.jsonl"}],
            "storage": {"uri": f"s3://{bucket}/{name}/", "endpoint": endpoint, "pathStyle": True},
            "retry": {"limit": 1, "backoffSeconds": 0},
        },
    }
    if method == "rif-grpo":  # the three-stage task (filter, train, evaluate) the operator tests play through
        body["spec"]["rif"] = {"mode": "prefilter"}
    body["spec"].update(spec)
    return body


@dataclass
class World:
    client: kubernetes.client.ApiClient
    namespace: str
    endpoint: str
    late: list = field(default_factory=list)  # (resource, task index) committed on the next play_trainer

    def __post_init__(self) -> None:
        self.co = kubernetes.client.CustomObjectsApi(self.client)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.apps = kubernetes.client.AppsV1Api(self.client)

    # ------------------------------------------------------------------ the user
    def create(self, body: dict) -> dict:
        return self.co.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def get(self, name: str) -> Optional[dict]:
        try:
            return self.co.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_spec(self, name: str, spec: dict) -> None:
        self.co.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec})

    def delete(self, name: str) -> None:
        self.co.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def status(self, name: str) -> dict:
        return (self.get(name) or {}).get("status") or {}

    def events(self, name: str) -> list[dict]:
        items = self.core.list_namespaced_event(self.namespace).items
        return [{"type": e.type, "reason": e.reason, "message": e.message} for e in items
                if e.involved_object.name == name]

    def wait_for_passes(self, per_run: int, timeout: float = 60) -> None:
        """Until the operator running in this process has made `per_run` more passes per resource on the cluster
        (every run is resynced each CPT_RECONCILE_INTERVAL): a "nothing changes" check then spans passes that
        really ran, however loaded the machine, where a fixed sleep spans only time."""
        from cpt_operator import metrics

        def passes() -> float:
            return metrics.REGISTRY.get_sample_value("cpt_operator_reconcile_total") or 0.0

        runs = len(self.co.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"])
        start, wanted = passes(), per_run * max(1, runs)
        wait_for(lambda: passes() - start >= wanted, timeout, what=f"{wanted} more reconcile passes")

    def events_with(self, name: str, *reasons: str, timeout: float = 15) -> list[dict]:
        """The run's events once each of `reasons` is among them. The operator posts events behind its passes
        (kube/controller/event_sender.py): a second or more after the status that reports the same transition."""
        def ready() -> Optional[list[dict]]:
            events = self.events(name)
            have = {e["reason"] for e in events}
            return events if all(r in have for r in reasons) else None
        return wait_for(ready, timeout, what=f"events {', '.join(reasons)} on {name}")

    # ------------------------------------------------------------------ children
    def jobs(self, run: str) -> list[dict]:
        items = self.co.list_namespaced_custom_object(*JOBS[:2], self.namespace, JOBS[2],
                                                      label_selector=f"cpt.dev/run={run}")["items"]
        return sorted(items, key=lambda j: j["metadata"]["creationTimestamp"] + j["metadata"]["name"])

    def children(self, run: str) -> set[tuple[str, str]]:
        sel = f"cpt.dev/run={run}"
        out = {(JOB_KIND, j["metadata"]["name"]) for j in self.jobs(run)}
        out |= {("ConfigMap", c.metadata.name) for c in self.core.list_namespaced_config_map(
            self.namespace, label_selector=sel).items}
        out |= {("Service", s.metadata.name) for s in self.core.list_namespaced_service(
            self.namespace, label_selector=sel).items}
        out |= {("Deployment", d.metadata.name) for d in self.apps.list_namespaced_deployment(
            self.namespace, label_selector=sel).items}
        return out

    # ------------------------------------------------------------------ the training operator
    def finish_job(self, name: str, phase: str = "Succeeded", message: str = "") -> None:
        stamp = now()
        conditions = [{"type": "Created", "status": "True", "lastTransitionTime": stamp},
                      {"type": "Running", "status": "False", "lastTransitionTime": stamp},
                      {"type": DONE[phase], "status": "True", "reason": f"{JOB_KIND}{phase}", "message": message,
                       "lastTransitionTime": stamp}]
        self.co.patch_namespaced_custom_object_status(*JOBS[:2], self.namespace, JOBS[2], name,
                                                      {"status": {"conditions": conditions,
                                                                  "completionTime": stamp}})

    def start_job(self, name: str) -> None:
        running = ({"conditions": [{"type": "Running", "status": "True", "lastTransitionTime": now()}],
                    "startTime": now()} if JOB_KIND == "PyTorchJob" else
                   {"jobsStatus": [{"name": "node", "active": 1, "ready": 1, "succeeded": 0, "failed": 0}]})
        self.co.patch_namespaced_custom_object_status(*JOBS[:2], self.namespace, JOBS[2], name, {"status": running})

    # ------------------------------------------------------------------ the trainer
    def store(self, resource: dict):
        storage = resource["spec"]["storage"]
        return open_store(storage["uri"], endpoint=storage.get("endpoint"), path_style=True)

    def commit(self, resource: dict, index: int) -> None:
        """What the evaluate stage of task `index` writes: rif.json (rif-grpo), eval.json, then the manifest."""
        spec = validate_resource(resource, "cluster").spec
        names = planner.task_names(spec)
        store = self.store(resource)
        name = names[index]
        if index >= 1 and spec.method == "rif-grpo":
            store.put_json(layout.task_key(index, name, layout.RIF),
                           {"kept": 60, "dropped": 40, "filtered_fraction": 0.4})
        row = {"tasks": {t.name: accuracy(index, j) for j, t in enumerate(spec.tasks, start=1)},
               "general": {b.name: 0.5 for b in spec.general}}
        store.put_json(layout.task_key(index, name, layout.EVAL), row)
        commit_task(store, index, name, planner.task_spec_hash(spec, index), {"index": index})

    def play_trainer(self, run: str, fail: Callable[[dict], Optional[str]] = lambda job: None,
                     commit_late: bool = False) -> int:
        """Finish every unfinished job of the run, committing results for evaluate stages. Returns how many.

        commit_late: mark an evaluate job Succeeded first and commit its results only on the next call (a real
        job's status can reach the operator before its commit is visible: the commit-grace path)."""
        for resource, index in self.late:
            self.commit(resource, index)
        self.late.clear()
        done = 0
        for job in self.jobs(run):
            conditions = (job.get("status") or {}).get("conditions") or []
            if any(c["type"] in DONE.values() and c["status"] == "True" for c in conditions):
                continue
            if jobs.is_suspended(JOB_BACKEND, job):
                continue
            labels = job["metadata"]["labels"]
            reason = fail(job)
            if reason:
                self.finish_job(job["metadata"]["name"], "Failed", reason)
            else:
                resource = self.get(run)
                if resource is None:
                    return done
                if labels["cpt.dev/stage"] == "evaluate" and commit_late:
                    self.late.append((resource, int(labels["cpt.dev/task-index"])))
                elif labels["cpt.dev/stage"] == "evaluate":
                    self.commit(resource, int(labels["cpt.dev/task-index"]))
                self.finish_job(job["metadata"]["name"])
            done += 1
        return done


def suspended(job: dict) -> bool:
    """Whether a stage job (of the kind under test) is suspended."""
    return jobs.is_suspended(JOB_BACKEND, job)


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except kubernetes.client.ApiException as exc:  # an injected fault hit the test's own read
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: last={last!r}")


def run_to_end(world: World, run: str, timeout: float = 60, step: Optional[Callable[[], None]] = None,
               fail: Callable[[dict], Optional[str]] = lambda job: None, commit_late: bool = False) -> dict:
    """Play the trainer until the run is Succeeded or Failed; `step` runs between rounds (restarts, faults)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            resource = world.get(run) or {}
            status = resource.get("status") or {}
            current = status.get("observedGeneration") == resource.get("metadata", {}).get("generation")
            if current and status.get("phase") in ("Succeeded", "Failed"):
                return status
            world.play_trainer(run, fail, commit_late)
        except kubernetes.client.ApiException:
            pass  # an injected fault hit the test's own request; try again
        if step is not None:
            step()
        time.sleep(0.1)
    raise AssertionError(f"run {run} did not finish in {timeout}s: {world.status(run)}")


@contextlib.contextmanager
def running_operator() -> Iterator[object]:
    """The operator as `kopf run -A --standalone -m cpt_operator.kube.kopf_adapter`, in a thread of this process."""
    from kopf.testing import KopfRunner

    with KopfRunner(["run", "-A", "--standalone", "-m", "cpt_operator.kube.kopf_adapter"], timeout=60) as runner:
        yield runner
    assert runner.exception is None, runner.output[-3000:]
