"""Score the kept step checkpoints of one finished v4 Part M run on its dev set (PROTOCOL-v4.md, Amendment 1).
Run by bench/forgetting/v4curve.py in the product's Python (.venv-vllm for engine vllm) with the measured code
first on PYTHONPATH:

    python bench/forgetting/v4curve_score.py RUN_DIR ENGINE OUT.json STEP_DIR [STEP_DIR ...]

Everything is the product's own code, as its evaluate stage does it (cpt_trainer.stages.run_evaluate): the run's
cpt.yaml read as `cpt run` reads it, the evaluation sets of row 1 (eval_tasks) of which the dev set
`dev-<task>` is kept, load_model of each step checkpoint folder (the HF Trainer's folder: model.safetensors,
config and tokenizer, as the train stage saved it), make_engine, the stage's seed, evaluate_row at the spec's
maxCompletionTokens (greedy). For `vllm`, one server is started from the run's base model as `cpt run` starts it
(cpt_operator.local.rollout_server: fp32, --enforce-eager, a fresh key, this machine's weight-sync backend) and
each checkpoint's weights are pushed to it by the engine (make_engine for the first, sync_weights after: the
calls a learner makes). Both engines offer that interface, so `hf` scores the same way in a venv without vLLM.
Imports nothing from bench/ (it runs in the other venv)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def score(run_dir: Path, engine_name: str, steps: list[Path], log_dir: Path) -> dict:
    os.chdir(run_dir)  # relative dataset and model paths mean what they meant to `cpt run` there
    from transformers import set_seed

    import cpt_trainer
    from cpt_core import rollout
    from cpt_operator.local.resource import load_resource
    from cpt_trainer.evaluate import evaluate_row
    from cpt_trainer.rollout import make_engine
    from cpt_trainer.stages import eval_tasks, load_model, stage_seed

    _, spec = load_resource("cpt.yaml")
    dev_name = f"dev-{spec.tasks[0].name}"
    _, general = eval_tasks(spec, 1)
    dev = [g for g in general if g.name == dev_name]
    if not dev:
        raise RuntimeError(f"{run_dir}: the spec has no general set {dev_name}")
    base_dir = str((run_dir / spec.model.removeprefix("file://")).resolve())
    meta = {"run": str(run_dir), "requested": engine_name, "python": sys.executable, "set": dev_name,
            "code": os.path.dirname(os.path.dirname(cpt_trainer.__file__)),
            "max_tokens": spec.evaluation.max_completion_tokens}
    servers, url, engine, points = None, None, None, []
    try:
        if engine_name == "vllm":
            from cpt_operator.local.rollout_server import RolloutServers

            key, backend = rollout.new_key(), rollout.local_weight_sync_backend()
            os.environ.update({**rollout.client_key_env(key), rollout.WEIGHT_SYNC_BACKEND_ENV: backend})
            t0 = time.monotonic()
            servers = RolloutServers(base_dir, log_dir, replicas=spec.rollout.replicas, token=key,
                                     backend=backend).start()
            url, meta["server_start_s"] = servers.url, round(time.monotonic() - t0, 1)
        for folder in steps:
            info = json.loads((folder / "step.json").read_text())
            model, tokenizer = load_model(str(folder))
            if engine is None:
                engine = make_engine(engine_name, model, tokenizer, url, spec.rollout.tensor_parallel)
            else:
                engine.sync_weights(model, info["step"])
            if engine.name != engine_name:
                raise RuntimeError(f"asked for engine {engine_name}, the product used {engine.name}")
            set_seed(stage_seed(spec, 1, "evaluate"))
            row = evaluate_row(engine, tokenizer, 1, [], dev, spec.evaluation.max_completion_tokens)
            points.append({"step": info["step"], "attempt": info["attempt"], "general": row["general"],
                           "correct": row["correct"], "seconds": row["seconds"], "engine": engine.name,
                           "weights": {f["name"]: f["sha256"] for f in info["files"]}})
            del model
    finally:
        if engine is not None:
            engine.close()
        if servers is not None:
            servers.stop()
    return {"engine": engine_name, "points": points, "meta": meta}


def main(argv: list[str]) -> int:
    run_dir, engine_name, out = Path(argv[0]).resolve(), argv[1], Path(argv[2]).resolve()
    steps = [Path(p).resolve() for p in argv[3:]]
    t0 = time.monotonic()
    res = score(run_dir, engine_name, steps, out.parent / f"{out.stem}-rollout")
    res["meta"]["wallSeconds"] = round(time.monotonic() - t0, 1)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.rename(out)  # only a finished score carries the cache name
    print(f"{run_dir.name}: " + ", ".join(f"step {p['step']} {p['general']}" for p in res["points"])
          + f" ({engine_name}, {res['meta']['wallSeconds']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
