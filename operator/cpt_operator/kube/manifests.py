"""Pure builders for the children of a ContinualPostTraining: plain dicts, no I/O.

Job and rollout-server names are deterministic (`<cpt>-<task-index>-<stage>[-r<attempt>]`) so that a restarted
operator finds what it created; the stage ConfigMap and the rollout-key Secret get private names (an HMAC suffix,
planner.names.private_name) so nobody can take them first. Every child carries an ownerReference (garbage
collection) and labels (observation by selector); the mark that proves it ours is added by kube.create.
"""

from __future__ import annotations

import copy
import hashlib
import secrets
from typing import Optional
from urllib.parse import urlsplit

from cpt_core import api, rollout, tenancy
from cpt_operator.kube.defaults import PlanDefaults
from cpt_core.stage import STAGE_CONFIG_FILE, StageConfig
from cpt_operator.planner.names import MAX_CHILD_NAME, private_name, rollout_name

LABEL_RUN = f"{api.GROUP}/run"
LABEL_TASK = f"{api.GROUP}/task-index"
LABEL_STAGE = f"{api.GROUP}/stage"
LABEL_ATTEMPT = f"{api.GROUP}/attempt"
LABEL_RUN_UID = f"{api.GROUP}/run-uid"  # NetworkPolicy peers: the run's uid, not a name or role anyone could reuse
LABEL_COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = {"app.kubernetes.io/managed-by": "cpt-operator", "app.kubernetes.io/part-of": "cpt-operator"}
CONFIG_MOUNT = "/etc/cpt"

# Pod Security `restricted` (tests/support/pss.py checks the rules): the UID of the learner and rollout images
# (images/*/Dockerfile), a read-only root with writable emptyDirs for HOME (HF, vLLM, triton and DeepSpeed caches)
# and /tmp (checkpoints downloaded by a stage), and no ServiceAccount token (stage pods never call the API).
RUN_AS = 10001
HOME = "/home/cpt"
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
                "seccompProfile": {"type": "RuntimeDefault"}}
# Requests when the spec names none: never BestEffort (first evicted, unschedulable under quota).
LEARNER_REQUESTS = {"cpu": "2", "memory": "8Gi"}
ROLLOUT_REQUESTS = {"cpu": "2", "memory": "16Gi"}
SHM_PER_GPU_GI = 8  # /dev/shm (NCCL, dataloader workers) is RAM: sized, so a leak cannot take the node's memory


def owner_reference(resource: dict) -> dict:
    meta = resource["metadata"]
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": meta["name"],
        "uid": meta.get("uid") or "",
        # No blockOwnerDeletion: it needs `update` on continualposttrainings/finalizers (OpenShift enforces it),
        # and garbage collection works without it.
        "controller": True,
    }


def labels(run: str, index: int, component: str, stage: Optional[str] = None, attempt: Optional[int] = None) -> dict:
    out = {**MANAGED_BY, LABEL_RUN: run, LABEL_TASK: str(index), LABEL_COMPONENT: component}
    if stage is not None:
        out[LABEL_STAGE] = stage
    if attempt is not None:
        out[LABEL_ATTEMPT] = str(attempt)
    return out


def pod_labels(resource: dict, child_labels: dict) -> dict:
    """Labels of a stage pod: its child's labels plus the run's uid, which the run's NetworkPolicy selects on."""
    return {**child_labels, LABEL_RUN_UID: resource["metadata"].get("uid") or ""}


def child_metadata(resource: dict, name: str, child_labels: dict) -> dict:
    return {
        "name": name,
        "namespace": resource["metadata"].get("namespace", "default"),
        "labels": child_labels,
        "ownerReferences": [owner_reference(resource)],
    }


def _hardened(pod_spec: dict, gpus: int) -> dict:
    """`pod_spec` with the restricted security settings, writable scratch volumes and a sized /dev/shm."""
    scratch = [("home", HOME, {}), ("tmp", "/tmp", {}),
               ("dshm", "/dev/shm", {"medium": "Memory", "sizeLimit": f"{max(gpus, 1) * SHM_PER_GPU_GI}Gi"})]
    for container in pod_spec["containers"]:
        container["securityContext"] = copy.deepcopy(CONTAINER_SECURITY)
        container.setdefault("volumeMounts", []).extend({"name": n, "mountPath": path} for n, path, _ in scratch)
        container.setdefault("env", []).append({"name": "HOME", "value": HOME})
    pod_spec.setdefault("volumes", []).extend({"name": n, "emptyDir": dir_} for n, _, dir_ in scratch)
    pod_spec.update(securityContext=copy.deepcopy(POD_SECURITY), automountServiceAccountToken=False,
                    enableServiceLinks=False)
    return pod_spec


def stage_config_name(resource: dict, job: str, defaults: PlanDefaults) -> str:
    """The stage ConfigMap of job `job`: `<job>-<hmac>`, not guessable from the run's name."""
    return private_name(job, defaults.child_key, resource["metadata"].get("uid") or "")


def stage_configmap(resource: dict, job: str, cfg: StageConfig, defaults: PlanDefaults) -> dict:
    """The stage configuration the learner pods of job `job` read from CONFIG_MOUNT/stage.yaml."""
    name = stage_config_name(resource, job, defaults)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(resource, name, labels(cfg.run, cfg.task_index, "stage-config", cfg.stage, cfg.attempt)),
        "data": {STAGE_CONFIG_FILE: cfg.dump_yaml()},
    }


def _storage_env(spec: api.CptSpec) -> list[dict]:
    """How the stage's S3 client reaches storage (the URI itself is in the stage config, the one place it reads)."""
    env: list[dict] = []
    if spec.storage.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL_S3", "value": spec.storage.endpoint})
    if spec.storage.region:
        env.append({"name": "AWS_DEFAULT_REGION", "value": spec.storage.region})
    if spec.storage.secret_ref:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.append({"name": key, "valueFrom": {
                "secretKeyRef": {"name": spec.storage.secret_ref, "key": key}}})
        env.append({"name": "AWS_SESSION_TOKEN", "valueFrom": {
            "secretKeyRef": {"name": spec.storage.secret_ref, "key": "AWS_SESSION_TOKEN", "optional": True}}})
    return env


def _tracking_env(spec: api.CptSpec) -> list[dict]:
    """spec.tracking's credentials from its Secrets (the stage reads the rest of spec.tracking from its config,
    cpt_trainer.tracking). Only stage pods get them; the operator never reads these Secrets."""
    tracking, env = spec.tracking, []
    if tracking is not None and tracking.mlflow is not None and tracking.mlflow.secret_ref:
        env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": tracking.mlflow.secret_ref, "key": key,
                                                             "optional": True}}} for key in api.MLFLOW_SECRET_KEYS]
    if tracking is not None and tracking.wandb is not None and tracking.wandb.secret_ref:
        env.append({"name": api.WANDB_SECRET_KEY, "valueFrom": {"secretKeyRef": {
            "name": tracking.wandb.secret_ref, "key": api.WANDB_SECRET_KEY}}})
    return env


def _rollout_key_env(resource: dict, defaults: PlanDefaults) -> list[dict]:
    """The run's rollout key, from its Secret, under every name a side reads it by."""
    ref = {"secretKeyRef": {"name": rollout_key_name(resource, defaults), "key": ROLLOUT_KEY}}
    return [{"name": name, "valueFrom": ref} for name in ROLLOUT_KEY_ENV]


def weight_sync_backend(spec: api.CptSpec) -> str:
    """nccl when the learner and its rollout servers both have GPUs, else gloo (cpt_core.rollout's one rule):
    the rollout servers' --weight-transfer-config and the learner's CPT_WEIGHT_SYNC_BACKEND both take this."""
    return rollout.weight_sync_backend(spec.learner.gpus_per_replica > 0 and spec.rollout.gpus > 0)


def learner_pod(resource: dict, cfg: StageConfig, job: str, defaults: PlanDefaults) -> dict:
    spec = cfg.spec
    gpus = spec.learner.gpus_per_replica
    resources: dict = {"requests": {"cpu": spec.learner.cpu or LEARNER_REQUESTS["cpu"],
                                    "memory": spec.learner.memory or LEARNER_REQUESTS["memory"]}, "limits": {}}
    if gpus:
        resources["limits"]["nvidia.com/gpu"] = gpus
    if spec.learner.memory:
        resources["limits"]["memory"] = spec.learner.memory
    # Only what some code reads: the run, stage, task, attempt, storage URI and rollout URL are in the stage
    # config (and the first four in the job's labels), so they are not repeated as variables nothing reads.
    env = [
        # The learner hosts the NCCL rendezvous for weight sync; rollout servers dial this address.
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        *_storage_env(spec),
        *_tracking_env(spec),
    ]
    if cfg.rollout_url:
        # The learner hosts the weight-transfer rendezvous on a fixed port (the run's NetworkPolicy admits the
        # run's own pods on every port) and broadcasts to every replica behind the headless Service.
        env += [{"name": "CPT_WEIGHT_SYNC_PORT", "value": str(rollout.WEIGHT_SYNC_PORT)},
                {"name": rollout.WEIGHT_SYNC_BACKEND_ENV, "value": weight_sync_backend(spec)},
                *_rollout_key_env(resource, defaults)]
    container = {
        "name": "pytorch",  # the Kubeflow training operator requires this container name
        "image": spec.learner.image or defaults.learner_image,
        "imagePullPolicy": defaults.image_pull_policy,
        "command": ["torchrun", "--nproc-per-node", str(spec.learner.processes_per_replica), "-m", "cpt_trainer.cli",
                    cfg.stage, "--config", f"{CONFIG_MOUNT}/{STAGE_CONFIG_FILE}"],
        "env": env,
        "resources": {k: v for k, v in resources.items() if v},
        "volumeMounts": [{"name": "stage-config", "mountPath": CONFIG_MOUNT, "readOnly": True}],
    }
    pod_spec = _hardened({"containers": [container],
                          "volumes": [{"name": "stage-config", "configMap": {"name": stage_config_name(resource, job, defaults)}}]}, gpus)
    if defaults.learner_service_account:
        pod_spec["serviceAccountName"] = defaults.learner_service_account
    return {"metadata": {"labels": pod_labels(resource, labels(cfg.run, cfg.task_index, "learner", cfg.stage,
                                                               cfg.attempt))},
            "spec": pod_spec}


def pytorchjob(resource: dict, name: str, cfg: StageConfig, defaults: PlanDefaults, suspend: bool = False) -> dict:
    """A PyTorchJob (kubeflow.org/v1): one Master and replicas-1 Workers running the stage entry point."""
    replicas = cfg.spec.learner.replicas
    pod = learner_pod(resource, cfg, name, defaults)
    specs = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": pod}}
    if replicas > 1:
        specs["Worker"] = {"replicas": replicas - 1, "restartPolicy": "Never", "template": pod}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": child_metadata(resource, name, labels(cfg.run, cfg.task_index, "learner", cfg.stage, cfg.attempt)),
        "spec": {
            # Retries are the operator's (new attempt, new name), so the job itself never restarts pods; a finished
            # (failed) attempt leaves no pod running that could keep writing (cleanPodPolicy Running).
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": 0, "suspend": suspend},
            "nprocPerNode": str(cfg.spec.learner.processes_per_replica),
            "pytorchReplicaSpecs": specs,
        },
    }


def rollout_deployment(resource: dict, run: str, index: int, model_uri: str, spec: api.CptSpec,
                       defaults: PlanDefaults) -> dict:
    """vLLM OpenAI-compatible servers for one task (`vllm serve` in the rollout image). After every optimizer
    step the learner pushes its weights to every replica through vLLM's native weight-transfer API (nccl), whose
    routes cpt_trainer's endpoint plugin mounts behind the run's key, without vLLM's dev mode (nccl, or gloo
    where either side has no GPU: weight_sync_backend, the learner gets the same); the flags
    are the ones `cpt run` and the tests use (cpt_core.rollout)."""
    name = rollout_name(run, index)
    child_labels = labels(run, index, "rollout")
    selector = {LABEL_RUN: run, LABEL_TASK: str(index), LABEL_COMPONENT: "rollout"}
    resources: dict = {"requests": dict(ROLLOUT_REQUESTS)}
    if spec.rollout.gpus:
        resources["limits"] = {"nvidia.com/gpu": spec.rollout.gpus}
    args = [model_uri, *rollout.server_args(model_uri, defaults.rollout_port, weight_sync_backend(spec), host="0.0.0.0",
                                            tensor_parallel=spec.rollout.tensor_parallel)]
    if model_uri.startswith("s3://"):
        args += ["--load-format", "runai_streamer"]  # stream safetensors straight from S3
    container = {
        "name": "vllm",
        "image": spec.rollout.image or defaults.rollout_image,
        "imagePullPolicy": defaults.image_pull_policy,
        "args": args,  # the image's entrypoint is `vllm serve`
        "env": [*_storage_env(spec), {"name": "HF_HUB_OFFLINE", "value": "1"},
                {"name": "VLLM_PLUGINS", "value": rollout.PLUGINS}, *_rollout_key_env(resource, defaults)],
        "ports": [{"name": "http", "containerPort": defaults.rollout_port}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10},
        "resources": resources,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(resource, name, child_labels),
        "spec": {
            "replicas": spec.rollout.replicas,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": pod_labels(resource, child_labels)},
                         "spec": _hardened({"containers": [container]}, spec.rollout.gpus)},
        },
    }


def rollout_service(resource: dict, run: str, index: int, defaults: PlanDefaults) -> dict:
    name = rollout_name(run, index)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(resource, name, labels(run, index, "rollout")),
        "spec": {
            "selector": {LABEL_RUN: run, LABEL_TASK: str(index), LABEL_COMPONENT: "rollout"},
            # Headless: the learner resolves every ready replica (dns+http://) to sync each one's weights and
            # spread rollouts over all of them; a ClusterIP would hand each request to one replica at random.
            # The weight-transfer rendezvous is hosted by the learner: only the HTTP port is served here.
            "clusterIP": "None",
            "ports": [{"name": "http", "port": defaults.rollout_port, "targetPort": "http"}],
        },
    }


def rollout_url(resource: dict, run: str, index: int, defaults: PlanDefaults) -> str:
    namespace = resource["metadata"].get("namespace", "default")
    return f"dns+http://{rollout_name(run, index)}.{namespace}.svc:{defaults.rollout_port}"


# ------------------------------------------------------------------------------ run-wide isolation children

# The per-run bearer key of the rollout servers: vLLM requires it on /v1 (VLLM_API_KEY = --api-key), the
# weight-sync routes plugin on its routes (CPT_WEIGHT_SYNC_TOKEN), and the learner sends it (CPT_ROLLOUT_API_KEY).
ROLLOUT_KEY = "token"
ROLLOUT_KEY_ENV = rollout.KEY_ENV
KEY_PLACEHOLDER = "<generated by the operator when it creates the Secret>"


def run_child_name(run: str, suffix: str) -> str:
    """`<run>-<suffix>` for a child per run, shortened with a stable hash like the per-task names."""
    name = f"{run}-{suffix}"
    if len(name) <= MAX_CHILD_NAME:
        return name
    tail = f"-{hashlib.sha256(run.encode()).hexdigest()[:6]}-{suffix}"
    return run[: MAX_CHILD_NAME - len(tail)].rstrip("-") + tail


def rollout_key_name(resource: dict, defaults: PlanDefaults) -> str:
    """`<run>-rollout-key-<hmac>`: a planter cannot create it first (see private_name)."""
    return private_name(run_child_name(resource["metadata"]["name"], "rollout-key"), defaults.child_key,
                        resource["metadata"].get("uid") or "")


def network_policy_name(run: str) -> str:
    return run_child_name(run, "pods")


def rollout_key_secret(resource: dict, run: str, defaults: PlanDefaults) -> dict:
    """The run's rollout key. Created once by the operator (409 keeps the first one), read only by the run's
    pods through secretKeyRef, garbage-collected with the run. The value is a placeholder until `with_key`
    (called by kube.create, at the last moment): plans stay deterministic and `cpt plan` prints no key."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": child_metadata(resource, rollout_key_name(resource, defaults), {**MANAGED_BY, LABEL_RUN: run}),
        "type": "Opaque",
        "stringData": {ROLLOUT_KEY: KEY_PLACEHOLDER},
    }


def with_key(obj: dict) -> dict:
    """`obj` with a fresh random key where a rollout key Secret holds the placeholder; anything else as is."""
    if obj.get("kind") != "Secret" or (obj.get("stringData") or {}).get(ROLLOUT_KEY) != KEY_PLACEHOLDER:
        return obj
    return {**obj, "stringData": {ROLLOUT_KEY: secrets.token_urlsafe(32)}}


def _storage_egress(endpoint: Optional[str], defaults: PlanDefaults) -> dict:
    """Egress to storage: its port, and where known the addresses: an endpoint written as an IP address gets that
    address alone; otherwise the admin's CIDRs (chart networkPolicy.storageCIDRs) when set. A host name without
    them is reachable on its port at any address: a policy cannot name a DNS name, and resolving it here would
    freeze one answer of a name whose addresses change (AWS S3)."""
    parsed = urlsplit(endpoint or "https://s3.amazonaws.com")
    try:
        port = parsed.port
    except ValueError:  # validation refuses such endpoints; no reason to crash a pass on one
        port = None
    rule: dict = {"ports": [{"port": port or (80 if parsed.scheme == "http" else 443), "protocol": "TCP"}]}
    address = tenancy.literal_address(endpoint) if endpoint else None
    if address is not None:
        rule["to"] = [{"ipBlock": {"cidr": f"{address}/{address.max_prefixlen}"}}]
    elif defaults.storage_cidrs:
        rule["to"] = [{"ipBlock": {"cidr": cidr}} for cidr in defaults.storage_cidrs]
    return rule


def _tracking_egress(spec: api.CptSpec) -> list[dict]:
    """Egress to the tracking servers the stages report to: each one's port, and its address when the URL names
    one (a host name is reachable on its port at any address, as storage is)."""
    tracking, rules = spec.tracking, []
    urls = [] if tracking is None else [
        *([tracking.mlflow.tracking_uri] if tracking.mlflow is not None else []),
        *([tracking.wandb.base_url or api.WANDB_CLOUD] if tracking.wandb is not None else [])]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            continue  # a file store: `cpt run` only (validation)
        rules.append(_storage_egress(url, PlanDefaults()))  # PlanDefaults(): storage's CIDRs are not a tracker's
    return rules


def _distinct(rules: list[dict]) -> list[dict]:
    return [r for i, r in enumerate(rules) if r not in rules[:i]]


def run_network_policy(resource: dict, run: str, spec: api.CptSpec, defaults: PlanDefaults = PlanDefaults()) -> dict:
    """Pods of this run (learner ranks and rollout servers, selected by run name AND uid) accept traffic only
    from each other: the vLLM routes (weight updates), the NCCL/gloo process groups and torchrun's rendezvous
    store are unreachable from any other pod. Egress: each other, DNS, storage (_storage_egress) and the
    tracking servers of spec.tracking (_tracking_egress)."""
    run_pods = {"matchLabels": {LABEL_RUN: run, LABEL_RUN_UID: resource["metadata"].get("uid") or ""}}
    peers = [{"podSelector": run_pods}]
    dns = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(resource, network_policy_name(run), {**MANAGED_BY, LABEL_RUN: run}),
        "spec": {
            "podSelector": run_pods,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": peers}],
            "egress": _distinct([{"to": peers}, {"ports": dns}, _storage_egress(spec.storage.endpoint, defaults),
                                 *_tracking_egress(spec)]),
        },
    }

