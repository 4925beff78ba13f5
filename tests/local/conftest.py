"""Fixtures for `cpt run` tests: a tiny base model and synthetic datasets, built once per session."""

import os
import shutil

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """A directory with `base/` (a partly trained tiny model) and train/eval JSONL for three skills."""
    from cpt_trainer import synthetic
    from cpt_trainer.tinymodel import BaseModelConfig, build_base

    from built_once import built_once

    root = tmp_path_factory.mktemp("local-run")
    cfg = BaseModelConfig(steps=300, batch_size=32, lr=3e-3, warmup=30, mixture={"copy": 0.6, "reverse": 0.4},
                          targets={"reverse": 0.3}, probe_every=50)
    base = built_once(tmp_path_factory, "local-base", lambda out: build_base(str(out), cfg, probe=32))
    shutil.copytree(base, root / "base")  # tests may write beside it; the built folder stays read-only
    for skill in ("copy", "reverse", "add"):
        for pool in ("train", "eval"):
            rows = synthetic.generate(skill, 24, seed=0, pool=pool)
            synthetic.write_jsonl(rows, str(root / f"{skill}-{pool}.jsonl"))
    return root


def write_spec(directory, name="tiny", storage="out", method="rif-grpo", extra_tasks="", max_steps=3, no_signal="skip",
               **overrides):
    """A small two-task spec (paths relative to the file, as users write them). The workspace base never solves
    `add` (RIF drops every prompt), so these runs go on past it (`no_signal`); test_no_signal covers the default."""
    text = (
        "apiVersion: cpt.dev/v1alpha1\n"
        "kind: ContinualPostTraining\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        "  model: base\n"
        f"  method: {method}\n"
        "  tasks:\n"
        "    - {name: reverse, train: reverse-train.jsonl, eval: reverse-eval.jsonl}\n"
        "    - {name: add, train: add-train.jsonl, eval: add-eval.jsonl, reward: numeric}\n"
        f"{extra_tasks}"
        "  general:\n"
        "    - {name: copy, eval: copy-eval.jsonl}\n"
        f"  grpo: {{groupSize: 4, learningRate: 5.0e-4, promptsPerStep: 8, maxSteps: {max_steps}, "
        "maxCompletionTokens: 12}\n"
        f"  sft: {{learningRate: 5.0e-4, batchSize: 8, maxSteps: {max_steps}}}\n"
        "  evaluation: {maxCompletionTokens: 12, maxSamples: 16}\n"
        "  retry: {limit: 0, backoffSeconds: 0}\n"
        "  rollout: {engine: hf}\n"  # generate inside the stage process (this venv has no vLLM server to start)
        f"  storage: {{uri: {storage}}}\n"
        + (f"  noSignal: {no_signal}\n" if no_signal else "")
    )
    if method == "rif-grpo":
        # prefilter: the filter stage these runs (and their RIF counts) were written for; online RIF has its own tests
        text = text.replace("  evaluation:", "  rif: {rollouts: 4, mode: prefilter}\n  evaluation:")
    for key, value in overrides.items():
        text = text.replace(key, value)
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 HTTP server (moto) on 127.0.0.1, with throwaway credentials in the environment."""
    from moto.server import ThreadedMotoServer

    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing-secret"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ[key] = value
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
