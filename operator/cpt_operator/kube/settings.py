"""Operator settings, read once from environment variables (the Helm chart sets them; docs/operator.md lists them).

Everything here is a cluster-wide choice of whoever runs the operator; what one run wants is in its spec. A bad
value fails at start with the variable's name, not somewhere deep in a reconcile pass.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from cpt_core import tenancy
from cpt_operator.kube import defaults as dflt, ownership
from cpt_operator.kube.defaults import PlanDefaults

# name -> (default, meaning): the single list docs/operator.md is checked against.
ENV: dict[str, tuple[str, str]] = {
    "CPT_NAMESPACES": ("", "Comma-separated namespaces (globs allowed) to watch; empty = all namespaces."),
    "CPT_LEARNER_IMAGE": (dflt.LEARNER_IMAGE, "Learner image for stage PyTorchJobs when spec.learner.image is unset."),
    "CPT_ROLLOUT_IMAGE": (dflt.ROLLOUT_IMAGE, "vLLM rollout image when spec.rollout.image is unset."),
    "CPT_IMAGE_PULL_POLICY": ("IfNotPresent", "imagePullPolicy of every child container."),
    "CPT_LEARNER_SERVICE_ACCOUNT": ("", "serviceAccountName of learner pods (empty: the namespace default)."),
    "CPT_ROLLOUT_PORT": ("8000", "HTTP port of the vLLM rollout servers."),
    "CPT_JOB_BACKEND": ("pytorchjob", "Kind of the stage jobs: pytorchjob (kubeflow.org/v1 PyTorchJob) or trainjob "
                                      "(Kubeflow Trainer v2 TrainJob). Only that kind is created; the other is "
                                      "watched too, so a switch of backend never runs a stage twice."),
    "CPT_TRAINING_RUNTIME": ("cpt-learner", "ClusterTrainingRuntime that TrainJobs refer to (the chart installs it)."),
    "CPT_NETWORK_POLICIES": ("true", "Create a NetworkPolicy per run that isolates its pods (false: the cluster has none)."),
    "CPT_STORAGE_CIDRS": ("", "Comma-separated CIDRs where storage is: each run's NetworkPolicy lets its pods reach the "
                              "storage port only there (empty: at any address, unless the endpoint is an IP address)."),
    tenancy.ENV_DEFAULT_ENDPOINT: ("", "S3 endpoint for runs whose spec.storage.endpoint is unset (MinIO); jobs get it "
                                       "too. Allowed even where it is an internal host."),
    "CPT_STORAGE_REGION": ("", "S3 region for runs whose spec.storage.region is unset."),
    "CPT_STORAGE_PATH_STYLE": ("false", "Force path-style S3 addressing for every run (MinIO, Ceph)."),
    "CPT_STORAGE_ENDPOINTS": ("", "Comma-separated globs of the storage endpoints runs may use, matched against "
                                  "spec.storage.endpoint (or https://s3.<region>.amazonaws.com when unset), e.g. "
                                  "https://minio.storage.svc:9000,https://s3.*.amazonaws.com; empty = any. A run on "
                                  "another endpoint is held with condition StorageReachable=False, reason "
                                  "StorageEndpointNotAllowed; nothing is sent to it."),
    "CPT_STORAGE_PREFIX_WITHOUT_SECRET": (
        "*", "Where a run without spec.storage.secretRef may keep its storage (it is read, and its owner marker "
             "written, with the operator's own identity): a URI prefix with {namespace}, e.g. "
             "s3://cpt-runs/{namespace}/; none: such runs are refused; *: anywhere (one tenant). The chart's "
             "default is none."),
    "CPT_RECONCILE_INTERVAL": ("600", "Seconds between storage re-reads of a run when nothing happens (commits and "
                                      "damage made out of band); events trigger every other pass."),
    "CPT_ERROR_BACKOFF": ("5", "Seconds before a failed pass (API or storage error) is retried."),
    "CPT_METRICS_PORT": ("9090", "Port of the Prometheus /metrics endpoint; 0 disables it."),
    "CPT_METRICS_ADDR": ("0.0.0.0", "Address the /metrics endpoint binds to."),
    "CPT_ADMISSION_GRACE": ("30", "Seconds a stage job may stay Pending before its Warning events are looked at for "
                                  "pods the cluster refused (admission, quota); then after growing gaps."),
    "CPT_WATCH_TIMEOUT": ("1800", "Server-side timeout of kopf's watch requests, seconds (then re-watched from where it ended; 1800 is the API server's own minimum, --min-request-timeout)."),
    ownership.KEY_ENV: ("", "The operator's secret key (32+ random characters) that marks its children and derives "
                            "the private names of stage ConfigMaps and rollout-key Secrets; the chart keeps one in a "
                            "Secret. Changing it makes every existing child foreign (runs in flight stop)."),
    ownership.KEY_FILE_ENV: ("", "Where the key is kept when CPT_CHILD_KEY is unset (created with a random key on "
                                 "first start; default ~/.config/cpt-operator/child-key)."),
    tenancy.ENV_IMAGES: ("", "Image repository prefixes a spec may name (comma-separated; empty or * = any)."),
    tenancy.ENV_DIGEST: ("false", "Refuse spec images without a @sha256 digest."),
    tenancy.ENV_REWARDS: ("", "Module prefixes allowed as module:function rewards (empty or unset = built-ins only; "
                              "* = any but the never-allowed ones: the standard library and the image's own stack)."),
    tenancy.ENV_INTERNAL_ENDPOINTS: ("", "Storage endpoints a spec may name although they are loopback, link-local, "
                                         "private or cluster-internal: host names (.suffix for a domain), CIDRs, or *."),
}
# Accepted by earlier versions; refused now rather than ignored, since a second replica would pass the same runs.
RETIRED_ENV = {
    "CPT_PEERING": "kopf peering is not supported: its pause stops kopf's own watch but not this operator's work "
                   "queue or informer, so two replicas would both pass every run. Run one replica (the chart does) "
                   "and unset CPT_PEERING.",
}


class SettingsError(ValueError):
    pass


def _float(env: Mapping[str, str], name: str, minimum: float = 0.0) -> float:
    raw = env.get(name) or ENV[name][0]
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} must be >= {minimum}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or ENV[name][0]).strip().lower()
    if raw not in ("1", "0", "true", "false", "yes", "no"):
        raise SettingsError(f"{name}={raw!r} is not a boolean (true/false)")
    return raw in ("1", "true", "yes")


def _str(env: Mapping[str, str], name: str) -> str:
    return (env.get(name) or ENV[name][0]).strip()


def job_backend(env: Optional[Mapping[str, str]] = None) -> str:
    """CPT_JOB_BACKEND, checked. Also read by `handlers` at import: kopf registers its watches then."""
    backend = _str(os.environ if env is None else env, "CPT_JOB_BACKEND")
    if backend not in ("pytorchjob", "trainjob"):
        raise SettingsError(f"CPT_JOB_BACKEND={backend!r} must be pytorchjob or trainjob")
    return backend


@dataclass(frozen=True)
class Settings:
    namespaces: tuple[str, ...] = ()
    plan_defaults: PlanDefaults = field(default_factory=PlanDefaults)
    storage_endpoint: Optional[str] = None
    storage_region: Optional[str] = None
    storage_path_style: bool = False
    storage_endpoints: tuple[str, ...] = ()  # CPT_STORAGE_ENDPOINTS globs; empty: any endpoint
    reconcile_interval: float = 600.0
    error_backoff: float = 5.0
    metrics_port: int = 9090
    metrics_addr: str = "0.0.0.0"
    watch_timeout: float = 1800.0
    admission_grace: float = 30.0
    storage_prefix_without_secret: str = "*"

    def unsigned_refusal(self, storage: Any, namespace: str) -> Optional[str]:
        """Why a run may not use the operator's own storage identity at `storage.uri`, or None. Only runs that
        would use it: no secretRef, an s3:// URI, and the operator's endpoint (a tenant's own endpoint without
        secretRef is read anonymously)."""
        rule = self.storage_prefix_without_secret
        if storage.secret_ref or rule == "*" or not str(storage.uri).startswith("s3://"):
            return None
        if storage.endpoint and storage.endpoint != self.storage_endpoint:
            return None
        fix = "name a Secret with this namespace's own S3 credentials in spec.storage.secretRef"
        if rule == "none":
            return (f"spec.storage.secretRef is required on this cluster: the operator does not read or write "
                    f"{storage.uri} with its own identity for a run; {fix}")
        prefix = rule.replace("{namespace}", namespace).rstrip("/") + "/"
        if (storage.uri.rstrip("/") + "/").startswith(prefix) and ".." not in storage.uri.split("/"):
            return None
        return (f"spec.storage.uri {storage.uri} is outside {prefix}, where runs of namespace {namespace} without "
                f"spec.storage.secretRef keep their storage; use a URI under it, or {fix}")

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "Settings":
        env = os.environ if env is None else env
        for name, why in RETIRED_ENV.items():
            if env.get(name):
                raise SettingsError(f"{name}={env[name]!r}: {why}")
        port = _float(env, "CPT_METRICS_PORT")
        rollout_port = _float(env, "CPT_ROLLOUT_PORT", 1)
        if port != int(port) or port > 65535 or rollout_port != int(rollout_port) or rollout_port > 65535:
            raise SettingsError("CPT_METRICS_PORT and CPT_ROLLOUT_PORT must be integer ports")
        try:
            tenancy.TenantPolicy.from_env(env)  # read where specs are validated; checked here to fail at start
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        backend = job_backend(env)
        try:
            child_key = ownership.load_key(env)
        except ownership.ChildKeyError as exc:
            raise SettingsError(str(exc)) from None
        storage_cidrs = tuple(c.strip() for c in _str(env, "CPT_STORAGE_CIDRS").split(",") if c.strip())
        for cidr in storage_cidrs:
            try:
                ipaddress.ip_network(cidr)
            except ValueError as exc:
                raise SettingsError(f"CPT_STORAGE_CIDRS: {cidr!r} is not a CIDR ({exc})") from None
        policy = _str(env, "CPT_IMAGE_PULL_POLICY")
        unsigned = _str(env, "CPT_STORAGE_PREFIX_WITHOUT_SECRET")
        if unsigned not in ("*", "none") and (not unsigned.startswith("s3://") or len(unsigned) <= len("s3://")
                                              or "{" in unsigned.replace("{namespace}", "")
                                              or "}" in unsigned.replace("{namespace}", "")):
            raise SettingsError(f"CPT_STORAGE_PREFIX_WITHOUT_SECRET={unsigned!r} must be *, none or an s3:// prefix "
                                "(only {namespace} may be templated), e.g. s3://cpt-runs/{namespace}/")
        if policy not in ("Always", "IfNotPresent", "Never"):
            raise SettingsError(f"CPT_IMAGE_PULL_POLICY={policy!r} must be Always, IfNotPresent or Never")
        return cls(
            namespaces=tuple(n.strip() for n in _str(env, "CPT_NAMESPACES").split(",") if n.strip()),
            plan_defaults=PlanDefaults(
                learner_image=_str(env, "CPT_LEARNER_IMAGE"),
                rollout_image=_str(env, "CPT_ROLLOUT_IMAGE"),
                learner_service_account=_str(env, "CPT_LEARNER_SERVICE_ACCOUNT") or None,
                image_pull_policy=policy,
                rollout_port=int(rollout_port),
                network_policies=_bool(env, "CPT_NETWORK_POLICIES"),
                job_backend=backend,
                training_runtime=_str(env, "CPT_TRAINING_RUNTIME"),
                storage_cidrs=storage_cidrs,
                child_key=child_key,
            ),
            storage_endpoint=_str(env, "CPT_STORAGE_ENDPOINT") or None,
            storage_region=_str(env, "CPT_STORAGE_REGION") or None,
            storage_path_style=_bool(env, "CPT_STORAGE_PATH_STYLE"),
            storage_endpoints=tuple(p.strip().rstrip("/") for p in _str(env, "CPT_STORAGE_ENDPOINTS").split(",")
                                    if p.strip()),
            storage_prefix_without_secret=unsigned,
            reconcile_interval=_float(env, "CPT_RECONCILE_INTERVAL", 0.05),
            error_backoff=_float(env, "CPT_ERROR_BACKOFF", 0.01),
            metrics_port=int(port),
            metrics_addr=_str(env, "CPT_METRICS_ADDR"),
            watch_timeout=_float(env, "CPT_WATCH_TIMEOUT", 1),
            admission_grace=_float(env, "CPT_ADMISSION_GRACE", 0.1),
        )
