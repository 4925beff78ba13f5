"""Constants and helpers of the chart tests (tests/support is on pytest's pythonpath)."""

from __future__ import annotations

from pathlib import Path


import helm_python as helm  # noqa: E402  (helm-python-sdk, a dev dependency)

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "cpt-operator"
RELEASE = "cpt-operator"
NAMESPACE = "cpt-system"
KUBE_VERSION = "1.30.0"
# Single-source files owned by observability; the chart embeds them. Until one exists its object is left out of
# FULL_VALUES (test_chart_monitoring says so with a skip, and checks that enabling it without the file fails).
RULES_FILE = CHART_DIR / "files" / "prometheus-rules.yaml"
DASHBOARD_FILE = CHART_DIR / "files" / "dashboard.json"

# Every switch on, both watch modes' extremes exercised elsewhere; values that a careful user would set.
FULL_VALUES = {
    "fullnameOverride": "cpt",
    "watchNamespaces": ["research", "prod-training"],
    "image": {"repository": "registry.example.com/cpt/operator", "tag": "0.1.0",
              "digest": "sha256:" + "a" * 64, "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "learner": {"image": {"repository": "registry.example.com/cpt/learner", "tag": "0.1.0-cu128"},
                "serviceAccountName": "learner-s3"},
    "rollout": {"image": {"repository": "registry.example.com/cpt/rollout", "tag": "0.1.0"}, "port": 8000},
    "stageImagePullPolicy": "Always",
    "storage": {"endpoint": "https://minio.storage.svc:9000", "region": "us-east-1"},
    "logLevel": "debug",
    "extraEnv": [{"name": "AWS_ACCESS_KEY_ID",
                  "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": "AWS_ACCESS_KEY_ID"}}}],
    "serviceAccount": {"create": True, "name": "cpt-operator",
                       "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/cpt"}},
    "rbac": {"create": True},
    "podAnnotations": {"example.com/owner": "ml-platform"},
    "podLabels": {"team": "ml-platform"},
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
    "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
    "health": {"port": 8081, "livenessProbe": {"initialDelaySeconds": 5, "periodSeconds": 10,
                                               "timeoutSeconds": 3, "failureThreshold": 5}},
    "metrics": {"port": 9191, "service": {"enabled": True, "type": "ClusterIP",
                                          "annotations": {"example.com/scrape": "true"}}},
    "prometheus": {"release": "monitoring",
                   "serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "5s",
                                      "labels": {"team": "ml-platform"}},
                   "prometheusRule": {"enabled": RULES_FILE.exists(), "labels": {"team": "ml-platform"}}},
    "grafana": {"dashboard": {"enabled": DASHBOARD_FILE.exists(), "namespace": "monitoring", "labels": {"team": "ml-platform"},
                              "annotations": {"grafana_folder": "CPT"}}},
    "networkPolicy": {"enabled": True},
}

# Kinds that are custom resources in a cluster (Prometheus Operator): kubernetes-validate has no schema for them.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule"}


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
