"""Multi-task training: every task's pool at once, then one evaluation (the upper-bound baseline).

Independent of StageConfig and storage so a benchmark can call it directly; writes into a local directory:
checkpoint/, train.json and eval.json (whose `tasks` hold every task's accuracy).
"""

from __future__ import annotations

import json
import os

from transformers import set_seed

from cpt_core.api import CptSpec
from cpt_core.resource_file import read_one


def load_spec(path: str) -> CptSpec:
    """A ContinualPostTraining file, or a bare spec."""
    doc = read_one(path)
    return CptSpec.model_validate(doc["spec"] if isinstance(doc, dict) and "spec" in doc else doc)


def run_multitask(spec: CptSpec, out_dir: str) -> dict:
    from cpt_trainer.evaluate import evaluate_row
    from cpt_trainer.rollout import make_engine
    from cpt_trainer.stages import eval_tasks, fetch_model_uri, learn, load_model, save_model
    from cpt_core.tasks import load_task

    tasks = [load_task(t.name, t.train, t.reward, t.answer_pattern, spec.storage) for t in spec.tasks]
    evals, general = eval_tasks(spec, 0)
    os.makedirs(out_dir, exist_ok=True)
    set_seed(spec.seed)
    model, tokenizer = load_model(fetch_model_uri(spec.model, spec, out_dir))
    engine = None if spec.method == "sft" else make_engine(spec.rollout.engine, model, tokenizer)
    stats, trainer = learn(spec, model, tokenizer, tasks, os.path.join(out_dir, "trainer"), len(tasks), engine,
                           seed=spec.seed)
    save_model(trainer, model, tokenizer, os.path.join(out_dir, "checkpoint"))
    engine = make_engine("hf", model, tokenizer)
    row = evaluate_row(engine, tokenizer, len(tasks), evals, general, spec.evaluation.max_completion_tokens)
    for name, obj in (("train.json", stats), ("eval.json", row)):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=1)
    return {"method": spec.method, "multitask": True, "steps": stats["steps"], "tasks": row["tasks"],
            "general": row["general"], "out": out_dir}
