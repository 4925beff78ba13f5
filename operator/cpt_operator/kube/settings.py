"""Operator settings, read once from environment variables (the Helm chart sets them; docs/operator.md lists them).

Which variables exist, how each is parsed, its default and its help are rows of kube/settings_table.py, the one
declaration the docs table, the dataclass defaults and the chart test are checked against.

Everything here is a cluster-wide choice of whoever runs the operator; what one run wants is in its spec. A bad
value fails at start with the variable's name, not somewhere deep in a reconcile pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from cpt_core import tenancy
from cpt_operator.kube import ownership
from cpt_operator.kube.defaults import PlanDefaults
from cpt_operator.kube.settings_table import BY_ENV, TABLE, SettingsError, default_value

# name -> (default, meaning), derived from the one table (kube/settings_table.py) for the tests that want a dict.
ENV: dict[str, tuple[str, str]] = {s.env: (s.default, s.help) for s in TABLE}
# Accepted by earlier versions; refused now rather than ignored, since a second replica would pass the same runs.
RETIRED_ENV = {
    "CPT_PEERING": "kopf peering is not supported: its pause stops kopf's own watch but not this operator's work "
                   "queue or informer, so two replicas would both pass every run. Run one replica (the chart does) "
                   "and unset CPT_PEERING.",
}
__all__ = ["ENV", "RETIRED_ENV", "Settings", "SettingsError", "job_backend"]


def job_backend(env: Optional[Mapping[str, str]] = None) -> str:
    """CPT_JOB_BACKEND, checked. Also read by `kopf_adapter` when the operator starts."""
    return BY_ENV["CPT_JOB_BACKEND"].value(os.environ if env is None else env)


@dataclass(frozen=True)
class Settings:
    """The operator's settings; every default is its row's default in kube/settings_table.py."""

    namespaces: tuple[str, ...] = default_value("namespaces")
    plan_defaults: PlanDefaults = field(default_factory=PlanDefaults)
    storage_endpoint: Optional[str] = default_value("storage_endpoint")
    storage_region: Optional[str] = default_value("storage_region")
    storage_path_style: bool = default_value("storage_path_style")
    storage_endpoints: tuple[str, ...] = default_value("storage_endpoints")  # globs; empty: any endpoint
    reconcile_interval: float = default_value("reconcile_interval")
    error_backoff: float = default_value("error_backoff")
    metrics_port: int = default_value("metrics_port")
    metrics_addr: str = default_value("metrics_addr")
    watch_timeout: float = default_value("watch_timeout")
    admission_grace: float = default_value("admission_grace")
    storage_prefix_without_secret: str = default_value("storage_prefix_without_secret")

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
        try:
            tenancy.TenantPolicy.from_env(env)  # read where specs are validated; checked here to fail at start
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        try:
            child_key = ownership.load_key(env)
        except ownership.ChildKeyError as exc:
            raise SettingsError(str(exc)) from None
        top: dict[str, Any] = {}
        plan: dict[str, Any] = {"child_key": child_key}
        for row in TABLE:
            value = row.value(env)  # every row is parsed, those read elsewhere too: a bad value fails here
            if row.field.startswith("plan_defaults."):
                plan[row.field.removeprefix("plan_defaults.")] = value
            elif row.field:
                top[row.field] = value
        return cls(plan_defaults=PlanDefaults(**plan), **top)
