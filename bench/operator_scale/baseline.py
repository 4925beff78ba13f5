"""The baseline of the operator-scale benchmark: a bare client that creates the same children, nothing else.

    KUBECONFIG=... python bench/operator_scale/baseline.py CHILDREN_JSON NAMESPACE WORKERS

CHILDREN_JSON maps each run's name to the objects the operator's planner creates for its first stage (computed
beforehand by run.py, with "__UID__" where the owner's uid goes). One watch on ContinualPostTrainings; on each
ADDED, a pool of WORKERS threads (as many as the operator's pass threads) POSTs that run's children with the
owner's uid filled in. No reads, no status, no events, no storage: the floor of what any controller must do.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import kubernetes

GROUP, VERSION, PLURAL = "cpt.dev", "v1alpha1", "continualposttrainings"
# Every kind the operator's first pass may create (run.py computes which ones with the planner).
PATHS = {"ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
         "Secret": "/api/v1/namespaces/{ns}/secrets",
         "Service": "/api/v1/namespaces/{ns}/services",
         "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
         "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
         "PyTorchJob": "/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs",
         "TrainJob": "/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs"}


def _loud(future) -> None:
    if future.exception() is not None:
        print(f"baseline: {future.exception()!r}", file=sys.stderr, flush=True)


def main() -> int:
    children_file, namespace, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(children_file, encoding="utf-8") as fh:
        children: dict[str, list[dict]] = json.load(fh)
    client = kubernetes.config.new_client_from_config(config_file=os.environ["KUBECONFIG"])
    co = kubernetes.client.CustomObjectsApi(client)

    def create(name: str, uid: str) -> None:
        for obj in children.get(name, ()):  # a kind missing from PATHS fails loudly, not in a silent thread
            body = json.loads(json.dumps(obj).replace("__UID__", uid))
            try:
                client.call_api(PATHS[obj["kind"]].format(ns=namespace), "POST", body=body,
                                header_params={"Accept": "application/json", "Content-Type": "application/json"},
                                auth_settings=["BearerToken"], _preload_content=False,
                                _return_http_data_only=True)
            except kubernetes.client.ApiException as exc:
                if exc.status != 409:
                    print(f"baseline: create {obj['kind']} for {name} failed: {exc.status}", file=sys.stderr)

    pool = ThreadPoolExecutor(max_workers=workers)
    print("ready", flush=True)
    watch = kubernetes.watch.Watch()
    for event in watch.stream(co.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                              timeout_seconds=3600):
        if event["type"] == "ADDED":
            meta = event["object"]["metadata"]
            pool.submit(create, meta["name"], meta["uid"]).add_done_callback(_loud)
    return 0


if __name__ == "__main__":
    sys.exit(main())
