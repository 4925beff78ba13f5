"""Re-score one matrix row of a finished pilot run with a chosen generation engine (the pilot's engine check,
PROTOCOL-v3.md addendum of 2026-11-30). Run by bench/forgetting/v3engines.py in the product's Python
(.venv-vllm, whose `cpt` ran the pilot) with the pilot's code snapshot first on PYTHONPATH:

    .venv-vllm/bin/python bench/forgetting/v3engine_score.py RUN_DIR ROW hf|vllm OUT.json

Everything is the product's own code, as its evaluate stage does it (cpt_trainer.stages.run_evaluate): the run's
cpt.yaml read as `cpt run` reads it, the eval sets of row ROW (eval_tasks), the checkpoint that row scored
(fetch_verified: every file's sha256 checked against the task's sub-manifest; row 0: the run's model), load_model,
make_engine, the stage's seed, evaluate_row at the spec's maxCompletionTokens (greedy). For `vllm`, one local
rollout server is started from the run's model as `cpt run` starts it (cpt_operator.local.rollout_server: fp32,
--enforce-eager) and the row's weights are pushed to it by make_engine. Nothing of the run is written: the row
goes to OUT.json only. Imports nothing from bench/ (it runs in the other venv)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path


def score(run_dir: Path, row: int, engine_name: str, log_dir: Path) -> dict:
    os.chdir(run_dir)  # relative dataset and model paths mean what they meant to `cpt run` there
    from transformers import set_seed

    import cpt_trainer
    from cpt_core.storage import open_store_for_spec
    from cpt_core.storage.staging import fetch_verified
    from cpt_operator.local.resource import load_resource
    from cpt_trainer.evaluate import evaluate_row
    from cpt_trainer.rollout import make_engine
    from cpt_trainer.stages import eval_tasks, fetch_model_uri, load_model, stage_seed

    _, spec = load_resource("cpt.yaml")
    tasks, general = eval_tasks(spec, row)
    base_dir = str((run_dir / spec.model.removeprefix("file://")).resolve())
    meta = {"run": str(run_dir), "row": row, "requested": engine_name, "python": sys.executable,
            "code": os.path.dirname(os.path.dirname(cpt_trainer.__file__))}
    servers = None
    with tempfile.TemporaryDirectory(prefix="cpt-engine-check-") as tmp:
        if row > 0:
            name = spec.tasks[row - 1].name
            sub = fetch_verified(open_store_for_spec(spec.storage), row, name, tmp)
            path, meta["checkpoint"] = tmp, {"task": name, "attempt": sub.get("attempt"),
                                             "files": {f["key"]: f["sha256"] for f in sub["files"]}}
        else:
            path = fetch_model_uri(spec.model, spec, tmp)
            meta["checkpoint"] = {"model": path}
        model, tokenizer = load_model(path)
        url = None
        try:
            if engine_name == "vllm":
                from cpt_operator.local.rollout_server import RolloutServers

                t0 = time.monotonic()
                servers = RolloutServers(base_dir, log_dir, replicas=spec.rollout.replicas).start()
                url, meta["server_start_s"] = servers.url, round(time.monotonic() - t0, 1)
            engine = make_engine(engine_name, model, tokenizer, url, spec.rollout.tensor_parallel)
            set_seed(stage_seed(spec, row, "evaluate"))
            out = evaluate_row(engine, tokenizer, row, tasks, general, spec.evaluation.max_completion_tokens)
            out["engine"] = engine.name
        finally:
            if servers is not None:
                servers.stop()
    if out["engine"] != engine_name:
        raise RuntimeError(f"asked for engine {engine_name}, the product used {out['engine']}")
    return dict(out, meta=dict(meta, max_tokens=spec.evaluation.max_completion_tokens))


def main(argv: list[str]) -> int:
    run_dir, row, engine_name, out = Path(argv[0]).resolve(), int(argv[1]), argv[2], Path(argv[3]).resolve()
    res = score(run_dir, row, engine_name, out.parent / f"{out.stem}-rollout")
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.rename(out)  # only a finished score carries the cache name
    print(f"{run_dir.name} row {row} {engine_name}: {res['tasks']} {res['general']} in {res['seconds']:.0f} s",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
