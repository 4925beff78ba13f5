"""Where a kind's objects are on the API server: `Ref` (apiVersion, plural) -> collection and object paths."""

from __future__ import annotations

from typing import Optional

Ref = tuple[str, str]  # (apiVersion, plural): "v1", "configmaps"; "kubeflow.org/v1", "pytorchjobs"


def collection_path(api_version: str, plural: str, namespace: Optional[str]) -> str:
    """/api/v1/namespaces/ns/configmaps, /apis/kubeflow.org/v1/namespaces/ns/pytorchjobs, ..."""
    root = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    return f"{root}/namespaces/{namespace}/{plural}" if namespace else f"{root}/{plural}"


def object_path(api_version: str, plural: str, namespace: Optional[str], name: str, sub: str = "") -> str:
    return f"{collection_path(api_version, plural, namespace)}/{name}" + (f"/{sub}" if sub else "")
