"""Pure pieces of Kubernetes API semantics the strict emulator needs (no I/O, no kmock).

Kept apart from the emulator so each rule can be read (and fixed) on its own: URL parsing (kmock 0.8 crashes on
`/api/v1/namespaces`), merge patches (RFC 7386 and a JSON-patch subset), label and field selectors, and the
name rules the real API server enforces (a Service name longer than 63 characters is a real-cluster failure
that a lenient mock would hide).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Optional

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
NAMESPACE_SUBRESOURCES = {"status", "finalize"}


@dataclass(frozen=True)
class Path:
    """A parsed resource URL: /api/v1/... or /apis/GROUP/VERSION/..."""

    group: str
    version: str
    plural: str
    namespace: Optional[str] = None
    name: Optional[str] = None
    subresource: Optional[str] = None


def parse_path(path: str) -> Optional[Path]:
    """Parse a resource URL; None for discovery and other non-resource paths."""
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    # /namespaces/NS/PLURAL/... is namespaced; /namespaces and /namespaces/NAME[/status] is the Namespace itself.
    if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in NAMESPACE_SUBRESOURCES):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = "/".join(rest[2:]) or None
    return Path(group, version, plural, namespace, name, sub)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, null deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, ops: list) -> Any:
    """RFC 6902 subset (add, remove, replace, test) - enough for `kubectl patch --type=json`."""
    doc = copy.deepcopy(target)
    for op in ops:
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].split("/")[1:]]
        parent = doc
        for token in tokens[:-1]:
            parent = parent[int(token)] if isinstance(parent, list) else parent[token]
        last = tokens[-1]
        kind = op["op"]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(index, op["value"])
            elif kind == "remove":
                parent.pop(index)
            elif kind == "replace":
                parent[index] = op["value"]
            elif kind == "test" and parent[index] != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        else:
            if kind in ("add", "replace"):
                if kind == "replace" and last not in parent:
                    raise ValueError(f"no such path {op['path']}")
                parent[last] = op["value"]
            elif kind == "remove":
                del parent[last]
            elif kind == "test" and parent.get(last) != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
    return doc


_SET_EXPR = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(selector: str) -> list[str]:
    """Split on commas that are not inside `in (...)` sets."""
    terms, depth, current = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += ch
    terms.append(current)
    return [t.strip() for t in terms if t.strip()]


def label_selector_matches(selector: Optional[str], labels: Optional[dict]) -> bool:
    """Kubernetes label selector syntax: k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b)."""
    if not selector:
        return True
    labels = labels or {}
    for term in _split_selector(selector):
        m = _SET_EXPR.match(term)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if (op == "in") != (key in labels and labels[key] in values):
                return False
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_selector_matches(selector: Optional[str], obj: dict) -> bool:
    """Field selectors on metadata.name / metadata.namespace (all that kubectl and kopf send)."""
    if not selector:
        return True
    for term in _split_selector(selector):
        negate = "!=" in term
        key, value = (s.strip() for s in term.replace("!=", "=").replace("==", "=").split("=", 1))
        actual: Any = obj
        for part in key.split("."):
            actual = actual.get(part) if isinstance(actual, dict) else None
        if (str(actual) == value) == negate:
            return False
    return True


def object_matches(path: Path, params: dict, obj: dict) -> bool:
    """Whether a list or watch request (namespace, name, label and field selectors) selects obj."""
    meta = obj["metadata"]
    return (not path.namespace or meta.get("namespace") == path.namespace) \
        and (not path.name or meta["name"] == path.name) \
        and label_selector_matches(params.get("labelSelector"), meta.get("labels")) \
        and field_selector_matches(params.get("fieldSelector"), obj)


def name_problems(plural: str, name: str) -> list[str]:
    """What the API server's name validation would reject."""
    if plural == "services" and (len(name) > 63 or not DNS1035_LABEL.match(name)):
        return [f"metadata.name: Invalid value: {name!r}: a DNS-1035 label must be <= 63 characters, "
                "start with a letter and consist of lower case alphanumerics or '-'"]
    if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        return [f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain is required"]
    return []


def label_problems(labels: Optional[dict]) -> list[str]:
    problems = []
    for key, value in (labels or {}).items():
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            problems.append(f"metadata.labels: Invalid value: {value!r}: a valid label value is required ({key})")
    return problems


def spec_part(obj: dict) -> dict:
    """Everything but metadata and status: what bumps metadata.generation when it changes."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
