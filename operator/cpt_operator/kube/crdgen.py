"""Generate the CRD from the pydantic models, so the two cannot drift.

`python -m cpt_operator.kube.crdgen > crds/continualposttraining.yaml` (or `cpt crd`) writes it; a test checks the
committed file equals the output. Pydantic's JSON Schema is converted to a Kubernetes structural schema:
refs inlined, Optional -> nullable, exclusive bounds in OpenAPI 3.0 form, no titles.
`additionalProperties: false` is not allowed beside `properties` in a CRD: the API server prunes unknown fields
instead, and `cpt validate` (extra="forbid") rejects them with a named error.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from cpt_core import api

PRINTER_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Task", "type": "string", "jsonPath": ".status.progress", "description": "completed/total tasks"},
    {"name": "Current", "type": "string", "jsonPath": ".status.currentTask", "priority": 1},
    {"name": "AvgAcc", "type": "number", "jsonPath": ".status.averageAccuracy", "format": "float"},
    {"name": "Forgetting", "type": "number", "jsonPath": ".status.forgetting", "format": "float"},
    {"name": "BWT", "type": "number", "jsonPath": ".status.backwardTransfer", "format": "float", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_DROP_KEYS = {"title", "$defs"}


def structural(model: type, description: str | None = None) -> dict:
    """The structural schema of one pydantic model (aliases on the wire)."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    out = _convert(schema, defs)
    if description:
        out["description"] = description
    return out


def _convert(node: Any, defs: dict) -> Any:
    if isinstance(node, list):
        return [_convert(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, defs)
    if "anyOf" in node:
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        nullable = len(variants) < len(node["anyOf"])
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(variants) == 1:
            out = _convert({**variants[0], **rest}, defs)
        else:
            out = {**_convert(rest, defs), "anyOf": _convert(variants, defs)}
        if nullable:
            out["nullable"] = True
            if out.get("default", 0) is None:
                out.pop("default")
        return out
    out: dict = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "default" and value is None:
            continue
        if key == "properties":
            out[key] = {name: _convert(v, defs) for name, v in value.items()}
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "const":
            out["enum"] = [value]
        elif key == "additionalProperties" and value is False:
            continue
        else:
            out[key] = _convert(value, defs)
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def status_schema() -> dict:
    schema = structural(api.CptStatus, "Observed state; rebuilt by the operator from the world on every pass.")
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def crd() -> dict:
    """The whole CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/name": "cpt-operator", "app.kubernetes.io/part-of": "cpt-operator"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": list(api.SHORT_NAMES),
                "categories": ["ml"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Continual post-training of a language model, task after task.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": structural(api.CptSpec, "What to train: base model, ordered tasks, method."),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated by `python -m cpt_operator.kube.crdgen` from cpt_core/api.py. Do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())
