"""Every API permission the operator needs: the chart's RBAC is tested to cover exactly this list.

Owned by `kube` (the only module that talks to the API) and `handlers` (what kopf watches and patches). When either
starts using a new verb, add it here: tests/operator/test_permissions.py runs a full life cycle (create, suspend,
resume, finish, delete) on the emulator and checks that the verbs used and the verbs listed are the same.
"""

from __future__ import annotations

from cpt_core import api

# (apiGroup, resource, verbs)
REQUIRED_RULES: list[tuple[str, str, tuple[str, ...]]] = [
    # kube reads the resource fresh each pass; kopf lists/watches it and patches its finalizer.
    (api.GROUP, api.PLURAL, ("get", "list", "watch", "patch")),
    (api.GROUP, f"{api.PLURAL}/status", ("patch",)),
    # Stage jobs: kopf watches them (wake-ups), kube lists, creates, and patches runPolicy.suspend.
    ("kubeflow.org", "pytorchjobs", ("list", "watch", "create", "patch")),
    # Rollout servers: created per task, deleted when the task is committed.
    ("apps", "deployments", ("list", "create", "delete")),
    ("", "services", ("list", "create", "delete")),
    ("", "configmaps", ("list", "create")),
    ("", "secrets", ("get",)),  # spec.storage.secretRef
    ("", "events", ("create",)),
    # kopf itself: discovers custom resources cluster-wide; namespaces only when CPT_NAMESPACES has globs.
    ("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch")),
    ("", "namespaces", ("list", "watch")),
]

# Used only in some configurations (see the comments above); the exactness test does not expect them.
CONDITIONAL_RULES: set[tuple[str, str, str]] = {("", "namespaces", "list"), ("", "namespaces", "watch")}
