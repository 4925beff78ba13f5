import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _base() -> dict:
    return {
        "apiVersion": "cpt.dev/v1alpha1",
        "kind": "ContinualPostTraining",
        "metadata": {"name": "demo", "namespace": "ml", "uid": "uid-1", "generation": 1},
        "spec": {
            "model": "s3://models/base/",
            "method": "rif-grpo",
            "tasks": [
                {"name": "add", "train": "s3://data/add/train.jsonl", "eval": "s3://data/add/eval.jsonl",
                 "reward": "numeric"},
                {"name": "reverse", "train": "s3://data/rev/train.jsonl", "eval": "s3://data/rev/eval.jsonl"},
                {"name": "sort", "train": "s3://data/sort/train.jsonl", "eval": "s3://data/sort/eval.jsonl"},
            ],
            "general": [{"name": "copy", "eval": "s3://data/copy/eval.jsonl"}],
            "storage": {"uri": "s3://ckpt/demo"},
            "learner": {"replicas": 2, "gpusPerReplica": 4},
            "retry": {"limit": 2, "backoffSeconds": 10},
        },
    }


@pytest.fixture
def resource() -> dict:
    return copy.deepcopy(_base())


@pytest.fixture(scope="session")
def crd() -> dict:
    return yaml.safe_load((ROOT / "crds" / "continualposttraining.yaml").read_text())
