"""Every API permission the operator needs: the chart's RBAC is tested to cover exactly this list.

Owned by `kube` (the only module that talks to the API): when kube starts using a new verb, add it here.
"""

from __future__ import annotations

# (apiGroup, resource, verbs)
REQUIRED_RULES: list[tuple[str, str, tuple[str, ...]]] = [
    ("cpt.dev", "continualposttrainings", ("get", "list", "watch", "patch")),
    ("cpt.dev", "continualposttrainings/status", ("get", "patch", "update")),
    ("kubeflow.org", "pytorchjobs", ("get", "list", "watch", "create", "patch", "delete")),
    ("kubeflow.org", "pytorchjobs/status", ("get",)),
    ("apps", "deployments", ("get", "list", "watch", "create", "patch", "delete")),
    ("", "services", ("get", "list", "watch", "create", "patch", "delete")),
    ("", "configmaps", ("get", "list", "watch", "create", "patch", "delete")),
    ("", "secrets", ("get",)),
    ("", "events", ("create", "patch")),
    ("events.k8s.io", "events", ("create", "patch")),
    # kopf itself: discovers CRDs and namespaces when watching cluster-wide.
    ("apiextensions.k8s.io", "customresourcedefinitions", ("get", "list", "watch")),
    ("", "namespaces", ("get", "list", "watch")),
]
