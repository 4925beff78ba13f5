"""Shared fixtures for the trainer tests: one thread, offline, tiny models built once per session."""

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
os.environ.setdefault("DS_BUILD_OPS", "0")

import pytest  # noqa: E402


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_cfg():
    """A quick base: copy learned first (phase 1), then `reverse` taught until a probe reaches 30% (phase 2)."""
    from cpt_trainer.tinymodel import BaseModelConfig

    return BaseModelConfig(steps=250, batch_size=32, lr=3e-3, warmup=30, mixture={"copy": 1.0},
                           targets={"reverse": 0.3}, tail_general=0.3, tail_lr=2e-3, tail_steps=400)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory, tiny_cfg):
    """Directory of the partly trained tiny base model (HF format)."""
    import json

    from built_once import built_once

    from cpt_trainer.tinymodel import build_base

    def build(out):
        report = build_base(str(out), tiny_cfg, probe=64)
        (out / "build-report.json").write_text(json.dumps(report))

    out = built_once(tmp_path_factory, "tiny-base", build)
    report = json.loads((out / "build-report.json").read_text())
    print("tiny base:", report["eval_accuracy"], report["seconds"], "s")
    acc = report["eval_accuracy"]  # what the learning tests assume of their starting point
    assert acc["copy"] >= 0.7 and 0.1 <= acc["reverse"] <= 0.7, f"the tiny base missed its recipe: {acc}"
    return str(out)


@pytest.fixture(scope="session")
def random_base(tmp_path_factory):
    """An untrained model with the same tokenizer: it never answers in the right format."""
    from cpt_trainer.tinymodel import BaseModelConfig, build_model, build_tokenizer

    out = tmp_path_factory.mktemp("random-base")
    tok = build_tokenizer()
    build_model(tok, BaseModelConfig(seed=3)).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Synthetic train/eval JSONL files for a few skills."""
    from cpt_trainer import synthetic

    out = tmp_path_factory.mktemp("data")
    for skill in ("copy", "reverse", "add"):
        for pool, n in (("train", 64), ("eval", 64)):
            synthetic.write_jsonl(synthetic.generate(skill, n, seed=0, pool=pool), str(out / f"{skill}-{pool}.jsonl"))
    return out


def load(path):
    from cpt_trainer.stages import load_model

    return load_model(path)
