"""bench/checkpoint: what step checkpoints cost (issue 29, docs/checkpoints.md).

    .venv/bin/python bench/checkpoint/run.py [--model examples/models/tiny-base] [--steps 20] [--method grpo]
    .venv/bin/python bench/checkpoint/run.py --quick   # 3 steps: the smoke run tests/bench runs (~1 min)

Runs the same train stage (in this process, hf engine, one thread) three ways on a local storage folder: without
step checkpoints, with one after every step (everySteps 1), and again resuming from the last one. Prints, per
save, the training stall (HF Trainer writing the folder: model, optimizer, RNG; measured from the step's end to
the save callback) and the upload (a background thread while the next steps train, hashing included), the
folder's size, the stage time with and without saves, the resume's download + check time, and what a save
would cost at the default interval (spec.checkpoint.everyMinutes). Markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _stage(model: str, data: Path, storage: Path, method: str, steps: int, every: int):
    from cpt_core.stage import StageConfig

    spec = {"model": model, "method": method, "seed": 1,
            "tasks": [{"name": "copy", "train": str(data / "train.jsonl"), "eval": str(data / "train.jsonl")}],
            "grpo": {"groupSize": 4, "learningRate": 1e-4, "klCoef": 0.0, "promptsPerStep": 4, "maxSteps": steps,
                     "maxCompletionTokens": 16},
            "sft": {"learningRate": 1e-4, "batchSize": 4, "maxSteps": steps},
            "rollout": {"engine": "hf"}, "checkpoint": {"everySteps": every, "everyMinutes": 0, "keep": 2},
            "storage": {"uri": str(storage)}}
    return StageConfig.model_validate({"run": "bench", "stage": "train", "task_index": 1, "spec": spec,
                                       "spec_hash": "bench"})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(ROOT / "examples/models/tiny-base"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--method", default="grpo", choices=["grpo", "sft"])
    p.add_argument("--quick", action="store_true", help="3 steps: checks the benchmark runs, measures little")
    p.add_argument("--nice", type=int, default=0, help="niceness of this process (the benchmarks' common flag)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps = 3
    if args.nice:
        os.nice(args.nice)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    from cpt_core.api import CheckpointSpec
    from cpt_core.storage import open_store
    from cpt_core.storage.steps import publish_step
    from cpt_trainer import synthetic
    from cpt_trainer.stages import run_stage
    from cpt_trainer.step_checkpoints import find_resume

    with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
        tmp = Path(tmp)
        (tmp / "data").mkdir()
        synthetic.write_jsonl(synthetic.generate("copy", 64, seed=0, pool="train"), str(tmp / "data/train.jsonl"))
        runs = {}
        (tmp / "warm").mkdir()  # one unmeasured step first: imports and first-call costs would land on "off"
        run_stage(_stage(args.model, tmp / "data", tmp / "store-warm", args.method, 1, 0), workdir=str(tmp / "warm"))
        for label, every in (("off", 0), ("every step", 1)):
            t0 = time.monotonic()
            work = tmp / f"work-{every}"
            work.mkdir()
            res = run_stage(_stage(args.model, tmp / "data", tmp / f"store-{every}", args.method, args.steps,
                                   every), workdir=str(work))
            runs[label] = (time.monotonic() - t0, res)
        saves = runs["every step"][1]["step_checkpoints"]
        # the resume side: commit one of the folders the Trainer left, then find, download and check it
        folder = sorted((tmp / "work-1" / "trainer").glob("checkpoint-*"), key=lambda f: int(f.name.split("-")[1]))[0]
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        store = open_store(str(tmp / "resume"))
        publish_step(store, 1, "copy", 0, 1, args.steps, str(folder), {"x": 1})
        t0 = time.monotonic()
        found, _ = find_resume(store, 1, "copy", {"x": 1}, str(tmp / "resume-local"))
        resume_seconds = time.monotonic() - t0
        assert found is not None
    write = [s["write_seconds"] for s in saves]
    upload = [s["upload_seconds"] for s in saves]
    off, on = runs["off"][0], runs["every step"][0]
    per_save_stall = (on - off) / max(1, len(saves))
    interval = CheckpointSpec().every_minutes * 60
    out = sys.stdout
    out.write(f"model {args.model}, {args.method}, {args.steps} steps, {len(saves)} saves "
              f"(folder {size / 1e6:.1f} MB)\n\n")
    out.write("| measure | value |\n|---|---|\n")
    out.write(f"| stage s, no step checkpoints | {off:.1f} |\n| stage s, one per step | {on:.1f} |\n")
    out.write(f"| stall per save (stage time difference / saves) s | {per_save_stall:.3f} |\n")
    out.write(f"| HF folder write per save, median s | {statistics.median(write):.3f} |\n")
    out.write(f"| upload per save (background), median s | {statistics.median(upload):.3f} |\n")
    out.write(f"| resume: list + download + sha256 check s | {resume_seconds:.3f} |\n")
    out.write(f"| % of stage time at the default interval ({interval / 60:.0f} min) | "
              f"{100 * max(per_save_stall, statistics.median(write)) / interval:.3f} |\n")
    print(json.dumps({"off": off, "on": on, "saves": saves}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
