"""The operator's settings, declared once: one row per environment variable (field, parser, default, help, chart).

Before this table the same fact was written four times (the settings module, the `Settings`/`PlanDefaults`
dataclass defaults, the chart's values.yaml and the docs table) and the copies drifted. Now:

- `Settings.from_env` parses every row with the row's parser (kube/settings.py);
- the dataclass defaults of `Settings` and `PlanDefaults` are the rows' defaults, parsed (`default_value`);
- docs/operator.md's settings table is generated from `markdown()` (`cpt settings --markdown`), and
  tests/operator/test_settings_table.py fails when the committed table differs;
- tests/chart/test_chart_settings.py renders the chart with its default values and fails when a variable the
  chart passes parses to something other than the row's default, unless the row says why it differs
  (`chart_default`).

This module imports no other operator module (defaults.py and settings.py import it), so it can be read alone.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from cpt_operator import __version__

IMAGE_REPOSITORY = "ghcr.io/cpt-operator"
OPERATOR_IMAGE = f"{IMAGE_REPOSITORY}/operator:{__version__}"
LEARNER_IMAGE = f"{IMAGE_REPOSITORY}/learner:{__version__}"
ROLLOUT_IMAGE = f"{IMAGE_REPOSITORY}/rollout:{__version__}"


class SettingsError(ValueError):
    """A bad operator setting; the message names the variable (the operator stops at start with it)."""


Parser = Callable[[str, str], Any]  # (variable name, raw stripped value) -> typed value, or SettingsError


def text(name: str, raw: str) -> str:
    return raw


def optional(name: str, raw: str) -> Optional[str]:
    return raw or None


def boolean(name: str, raw: str) -> bool:
    raw = raw.lower()
    if raw not in ("1", "0", "true", "false", "yes", "no"):
        raise SettingsError(f"{name}={raw!r} is not a boolean (true/false)")
    return raw in ("1", "true", "yes")


def number(minimum: float) -> Parser:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number") from None
        if value < minimum:
            raise SettingsError(f"{name}={raw!r} must be >= {minimum}")
        return value
    return parse


def port(minimum: int) -> Parser:
    def parse(name: str, raw: str) -> int:
        value = number(minimum)(name, raw)
        if value != int(value) or value > 65535:
            raise SettingsError(f"{name}={raw!r} must be an integer port ({minimum}-65535)")
        return int(value)
    return parse


def choice(*options: str) -> Parser:
    def parse(name: str, raw: str) -> str:
        if raw not in options:
            raise SettingsError(f"{name}={raw!r} must be {', '.join(options[:-1])} or {options[-1]}")
        return raw
    return parse


def csv(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def endpoints(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.rstrip("/") for part in csv(name, raw))


def cidrs(name: str, raw: str) -> tuple[str, ...]:
    for cidr in csv(name, raw):
        try:
            ipaddress.ip_network(cidr)
        except ValueError as exc:
            raise SettingsError(f"{name}: {cidr!r} is not a CIDR ({exc})") from None
    return csv(name, raw)


def storage_prefix(name: str, raw: str) -> str:
    rest = raw.replace("{namespace}", "")
    if raw not in ("*", "none") and (not raw.startswith("s3://") or len(raw) <= len("s3://") or "{" in rest
                                     or "}" in rest):
        raise SettingsError(f"{name}={raw!r} must be *, none or an s3:// prefix (only {{namespace}} may be "
                            "templated), e.g. s3://cpt-runs/{namespace}/")
    return raw


@dataclass(frozen=True)
class Setting:
    env: str
    field: str  # Settings attribute, "plan_defaults.<attr>" for PlanDefaults, "" if read elsewhere (see help)
    parse: Parser
    default: str  # as it would be written in the environment; unset or empty means this
    help: str  # markdown, one line in docs/operator.md
    chart: str = ""  # the values.yaml key the chart passes it from; "" = the chart leaves it at the default
    chart_default: str = ""  # set when the chart's default differs on purpose: what it is instead (docs)
    shown_default: str = ""  # how the docs show a default that is not a constant (a version, a home folder)

    def value(self, env: Mapping[str, str]) -> Any:
        return self.parse(self.env, (env.get(self.env) or self.default).strip())


_ = Setting  # short rows below
TABLE: tuple[Setting, ...] = (
    _("CPT_NAMESPACES", "namespaces", csv, "",
      "Comma-separated namespaces (globs allowed) to watch; empty = all namespaces.",
      chart="watchNamespaces", chart_default="the release namespace; empty with `clusterWide`"),
    _("CPT_LEARNER_IMAGE", "plan_defaults.learner_image", text, LEARNER_IMAGE,
      "Learner image for stage PyTorchJobs when `spec.learner.image` is unset.",
      chart="learner.image", shown_default=f"{IMAGE_REPOSITORY}/learner:<version>"),
    _("CPT_ROLLOUT_IMAGE", "plan_defaults.rollout_image", text, ROLLOUT_IMAGE,
      "vLLM rollout image when `spec.rollout.image` is unset.",
      chart="rollout.image", shown_default=f"{IMAGE_REPOSITORY}/rollout:<version>"),
    _("CPT_IMAGE_PULL_POLICY", "plan_defaults.image_pull_policy", choice("Always", "IfNotPresent", "Never"),
      "IfNotPresent", "imagePullPolicy of every child container (`Always`, `IfNotPresent`, `Never`).",
      chart="stageImagePullPolicy"),
    _("CPT_LEARNER_SERVICE_ACCOUNT", "plan_defaults.learner_service_account", optional, "",
      "serviceAccountName of learner pods (empty: the namespace default).", chart="learner.serviceAccountName"),
    _("CPT_ROLLOUT_PORT", "plan_defaults.rollout_port", port(1), "8000",
      "HTTP port of the vLLM rollout servers.", chart="rollout.port"),
    _("CPT_JOB_BACKEND", "plan_defaults.job_backend", choice("pytorchjob", "trainjob"), "pytorchjob",
      "Kind of the stage jobs: `pytorchjob` (kubeflow.org/v1 PyTorchJob) or `trainjob` (Kubeflow Trainer v2 "
      "TrainJob). Only that kind is created; the other is watched too, so a switch of backend never runs a stage "
      "twice. Under a queue, a PyTorchJob-backend stage with rollout servers is an AppWrapper (docs/install.md, "
      "Kueue).", chart="jobBackend"),
    _("CPT_TRAINING_RUNTIME", "plan_defaults.training_runtime", text, "cpt-learner",
      "ClusterTrainingRuntime that TrainJobs refer to (the chart installs it).", chart="trainingRuntime.name"),
    _("CPT_NETWORK_POLICIES", "plan_defaults.network_policies", boolean, "true",
      "Create a NetworkPolicy per run that isolates its pods (false: the cluster has none).",
      chart="networkPolicy.enabled"),
    _("CPT_STORAGE_CIDRS", "plan_defaults.storage_cidrs", cidrs, "",
      "Comma-separated CIDRs where storage is: each run's NetworkPolicy lets its pods reach the storage port only "
      "there. Empty: at any address, except that an endpoint written as an IP address gets that address alone.",
      chart="networkPolicy.storageCIDRs"),
    _("CPT_ALLOWED_IMAGES", "", text, "",
      "Image repository prefixes a spec may name (comma-separated; empty or `*`: any). Read by "
      "`cpt_core.tenancy`.", chart="policy.allowedImages",
      chart_default="the learner and rollout image repositories"),
    _("CPT_REQUIRE_IMAGE_DIGEST", "", boolean, "false",
      "Refuse spec images without a `@sha256:` digest. Read by `cpt_core.tenancy`.", chart="policy.requireDigest"),
    _("CPT_ALLOWED_REWARD_MODULES", "", text, "",
      "Module prefixes allowed as `module:function` rewards (empty or unset: built-ins only; `*`: any but the "
      "never-allowed ones, which are every standard-library module and the learner image's own packages). Read by "
      "`cpt_core.tenancy`.", chart="policy.allowedRewardModules"),
    _("CPT_ALLOWED_INTERNAL_ENDPOINTS", "", text, "",
      "Storage endpoints a spec may name although they are loopback, link-local, private or cluster-internal: "
      "hosts, `.domain` suffixes, CIDRs, or `*`. `CPT_STORAGE_ENDPOINT` is always allowed. Read by "
      "`cpt_core.tenancy`.", chart="policy.allowedInternalEndpoints"),
    _("CPT_STORAGE_ENDPOINT", "storage_endpoint", optional, "",
      "S3 endpoint for runs whose `spec.storage.endpoint` is unset (MinIO); the jobs get it too.",
      chart="storage.endpoint"),
    _("CPT_STORAGE_REGION", "storage_region", optional, "",
      "S3 region for runs whose `spec.storage.region` is unset.", chart="storage.region"),
    _("CPT_STORAGE_PATH_STYLE", "storage_path_style", boolean, "false",
      "Force path-style S3 addressing for every run (MinIO, Ceph).", chart="storage.pathStyle"),
    _("CPT_STORAGE_ENDPOINTS", "storage_endpoints", endpoints, "",
      "Globs of the storage endpoints runs may use, matched against `spec.storage.endpoint`, or "
      "`https://s3.<region>.amazonaws.com` when a run names none; empty: any endpoint validation lets through. A "
      "run on another endpoint is held (`StorageReachable=False`, reason `StorageEndpointNotAllowed`) and the "
      "operator sends it nothing.", chart="storage.allowedEndpoints"),
    _("CPT_STORAGE_PREFIX_WITHOUT_SECRET", "storage_prefix_without_secret", storage_prefix, "*",
      "Where a run without `spec.storage.secretRef` may keep its storage, since the operator reads it and writes "
      "its owner marker with its own identity: an `s3://` prefix where `{namespace}` is the run's namespace "
      "(`s3://cpt-runs/{namespace}/`), `none` (such runs are refused with StorageConflict), or `*` (anywhere: one "
      "tenant).", chart="storage.prefixWithoutSecret", chart_default="`none`"),
    _("CPT_CHILD_KEY", "", text, "",
      "The operator's secret (32+ characters): every child it creates carries an HMAC mark under it, and the "
      "stage ConfigMaps' and rollout-key Secrets' names end in a suffix derived from it. A child without a valid "
      "mark is never adopted (ForeignObject). Changing it makes the children of runs in flight foreign. Read by "
      "`kube.ownership.load_key`.", chart="childKey", chart_default="a kept Secret"),
    _("CPT_CHILD_KEY_FILE", "", text, "",
      "Where the key is kept when `CPT_CHILD_KEY` is unset; created with a random key on first start, so an "
      "operator run from a workstation keeps recognising its children after a restart.",
      shown_default="~/.config/cpt-operator/child-key"),
    _("CPT_RECONCILE_INTERVAL", "reconcile_interval", number(0.05), "600",
      "Seconds between storage re-reads of a run when nothing happens (commits and damage made out of band); "
      "events trigger every other pass, an idle pass sends no API request, and a run whose storage did not answer "
      "is re-read within a minute.", chart="reconcileIntervalSeconds"),
    _("CPT_ERROR_BACKOFF", "error_backoff", number(0.01), "5",
      "Seconds before a failed pass (API or storage error) is retried.", chart="errorBackoffSeconds"),
    _("CPT_METRICS_PORT", "metrics_port", port(0), "9090",
      "Port of the Prometheus `/metrics` endpoint; `0` disables it.", chart="metrics.port"),
    _("CPT_METRICS_ADDR", "metrics_addr", text, "0.0.0.0", "Address the `/metrics` endpoint binds to."),
    _("CPT_ADMISSION_GRACE", "admission_grace", number(0.1), "30",
      "Seconds a stage job may stay Pending before its Warning events are looked at for pods the cluster refused "
      "(admission, quota); then after growing gaps.", chart="admissionGraceSeconds"),
    _("CPT_WATCH_TIMEOUT", "watch_timeout", number(1), "1800",
      "Server-side timeout of the operator's watch requests (kopf's of the resources, the informer's of the "
      "children), seconds (then re-watched from where it ended; 1800 is the API server's own minimum, "
      "--min-request-timeout).", chart="watchTimeoutSeconds"),
)
BY_ENV: dict[str, Setting] = {s.env: s for s in TABLE}
BY_FIELD: dict[str, Setting] = {s.field: s for s in TABLE if s.field}


def default_value(field: str) -> Any:
    """The parsed default of the row for `field` ("reconcile_interval", "plan_defaults.rollout_port"): what the
    dataclasses use as their own defaults, so `Settings()` and `Settings.from_env({})` agree by construction."""
    row = BY_FIELD[field]
    return row.parse(row.env, row.default)


def markdown() -> str:
    """docs/operator.md's settings table (between its `settings-table` markers)."""
    lines = ["| Variable | Default | Chart value | Meaning |", "| --- | --- | --- | --- |"]
    for s in TABLE:
        shown = s.shown_default or s.default
        cell = f"`{shown}`" if shown else "(empty)"
        if s.chart_default:
            cell += f" (chart: {s.chart_default})"
        chart = f"`{s.chart}`" if s.chart else "(not set)"
        lines.append(f"| `{s.env}` | {cell} | {chart} | {s.help} |")
    return "\n".join(lines) + "\n"
