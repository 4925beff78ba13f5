"""Convert a CRD's structural schema to JSON Schema so custom resources can be checked with jsonschema.

Kubernetes-only keywords become their JSON Schema meaning: nullable -> null allowed, int-or-string -> anyOf,
exclusiveMinimum: true -> numeric bound; objects without preserve-unknown-fields reject unknown keys (what the
API server's strict field validation does).
"""

from __future__ import annotations

from typing import Any


def to_jsonschema(node: Any) -> Any:
    if isinstance(node, list):
        return [to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict = {}
    for key, value in node.items():
        if key in ("nullable", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string",
                   "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "exclusiveMinimum", "exclusiveMaximum"):
            continue
        if key == "properties":
            out[key] = {k: to_jsonschema(v) for k, v in value.items()}
        else:
            out[key] = to_jsonschema(value)
    if node.get("exclusiveMinimum") is True:
        out["exclusiveMinimum"] = out.pop("minimum")
    if node.get("exclusiveMaximum") is True:
        out["exclusiveMaximum"] = out.pop("maximum")
    if node.get("x-kubernetes-int-or-string"):
        out = {"anyOf": [{"type": "integer"}, {"type": "string"}], **{k: v for k, v in out.items() if k != "type"}}
    if node.get("type") == "object" and "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    if node.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def crd_validator(crd: dict):
    import jsonschema

    schema = to_jsonschema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)
