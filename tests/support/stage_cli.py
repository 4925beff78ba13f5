"""The stage CLI driven in-process, as the trainer's stage tests and replay tests drive it: a two-task spec on the
tiny model and local storage, a stage config file, and `cpt-trainer STAGE --config` with its CPT_ lines parsed."""

import json

from cpt_core.stage import StageConfig
from cpt_trainer import cli


def stage_spec(tiny_base, data_dir, storage, method="rif-grpo", **over):
    spec = {
        "model": tiny_base, "method": method, "seed": 1,
        "tasks": [
            {"name": "reverse", "train": str(data_dir / "reverse-train.jsonl"),
             "eval": str(data_dir / "reverse-eval.jsonl"), "reward": "exact"},
            {"name": "add", "train": "file://" + str(data_dir / "add-train.jsonl"),
             "eval": str(data_dir / "add-eval.jsonl"), "reward": "numeric"},
        ],
        "general": [{"name": "copy", "eval": str(data_dir / "copy-eval.jsonl"), "reward": "exact"}],
        "grpo": {"groupSize": 4, "learningRate": 1e-4, "klCoef": 0.0, "promptsPerStep": 8, "maxSteps": 4,
                 "maxCompletionTokens": 16},
        "sft": {"learningRate": 5e-4, "batchSize": 16, "maxSteps": 4},
        "rif": {"rollouts": 4, "minCorrect": 1, "mode": "prefilter"},  # the filter stage is part of the pipeline
        "evaluation": {"maxCompletionTokens": 16, "maxSamples": 32},
        "rollout": {"engine": "vllm"},  # no vLLM/CUDA here: falls back to hf with a logged reason
        "storage": {"uri": str(storage)},
    }
    spec.update(over)
    return spec


def write_stage_config(tmp_path, spec, stage, index, name="stage.yaml"):
    cfg = StageConfig.model_validate({"run": "demo", "stage": stage, "task_index": index, "spec": spec,
                                      "spec_hash": f"h{index}"})
    path = tmp_path / f"{stage}-{index}-{name}"
    path.write_text(cfg.dump_yaml())
    return str(path)


def run_stage_cli(capsys, *argv):
    rc = cli.main(list(argv))
    out = capsys.readouterr().out
    lines = [json.loads(line.split(" ", 1)[1]) for line in out.splitlines() if line.startswith("CPT_")]
    results = [json.loads(line.split(" ", 1)[1]) for line in out.splitlines() if line.startswith("CPT_RESULT")]
    return rc, lines, results[-1] if results else None
