"""Every environment variable the operator puts into a child's pods is read by something (issue 30 item 2: pod
variables that no code read, CPT_STORAGE_URI and CPT_ROLLOUT_URL among them, had been set for several rounds).

The children are those of the golden files (every scenario tests/api renders); a variable counts as read when its
name occurs in core/, operator/ or trainer/ other than where a manifest sets it, or when it belongs to a library
the pods run (boto3, Hugging Face, vLLM, MLflow, W&B)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
READ_BY_LIBRARIES = re.compile(r"^(AWS_|HF_|VLLM_|MLFLOW_|WANDB_)")


def _env_names(node, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        for item in node.get("env") or [] if isinstance(node.get("env"), list) else []:
            if isinstance(item, dict) and "name" in item:
                out.add(item["name"])
        for value in node.values():
            _env_names(value, out)
    elif isinstance(node, list):
        for value in node:
            _env_names(value, out)
    return out


def test_every_pod_variable_is_read_by_some_code():
    names: set[str] = set()
    for golden in sorted((REPO / "tests" / "api" / "golden").glob("*.yaml")):
        for doc in yaml.safe_load_all(golden.read_text()):
            _env_names(doc, names)
    assert "POD_IP" in names and "CPT_WEIGHT_SYNC_PORT" in names, "the golden files hold rollout stages"
    sources = "\n".join(p.read_text() for folder in ("core", "operator", "trainer")
                        for p in (REPO / folder).rglob("*.py"))
    unread = sorted(n for n in names if not READ_BY_LIBRARIES.match(n)
                    and not re.search(rf"\b{n}\b", re.sub(rf'"name": "{n}"', "", sources)))
    assert not unread, f"set in pods, read by no code: {unread}"
