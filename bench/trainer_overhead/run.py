#!/usr/bin/env python
"""bench/trainer_overhead: our GRPO train stage vs a bare TRL GRPOTrainer script, seconds per step.

    OMP_NUM_THREADS=1 .venv/bin/python bench/trainer_overhead/run.py [--quick] [--repeats 5] [--steps 40]

Both sides run as separate processes on the identical tiny config: the same base model (cpt-trainer
build-base), the same 64 training prompts, the same GRPOConfig fields and seed. Ours is the product's train
stage exactly as `cpt run` and a PyTorchJob start it (`python -m cpt_trainer.cli train --config stage.yaml`:
StageConfig, storage, reward wrappers, progress callback, checkpoint upload); the baseline is
bench/trainer_overhead/bare_trl.py (GRPOTrainer with TRL's default printer). The two alternate (ours, bare,
ours, bare, ...) so both see the same machine load. Seconds per step = median interval between consecutive
per-step log lines, timestamped here when they arrive, skipping the first WARMUP steps; the run's figure is
the median over repeats, and the overhead is ours / bare - 1 (also given as the median of the paired ratios).
Whole-process wall time (start-up, model load, save) is reported beside it as context.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent / "forgetting"))

import cptbench as cb  # noqa: E402
from protocols import QUICK  # noqa: E402  (bench/forgetting's smoke base: --quick builds the same one)

WARMUP = 2
GOAL = 0.05
CONFIG = {"groupSize": 8, "learningRate": 5.0e-4, "klCoef": 0.01, "promptsPerStep": 8,
          "maxCompletionTokens": 16, "temperature": 1.0}
TASK = "reverse"


def timed_lines(cmd: list[str], is_step, cwd=None) -> dict:
    """Run cmd, timestamp its step lines as they arrive; per-step intervals and the process wall time."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            env=cb.ENV, cwd=cwd)
    stamps, tail = [], []
    for line in proc.stdout:
        if is_step(line):
            stamps.append(time.monotonic())
        tail = (tail + [line])[-40:]
    code = proc.wait()
    wall = time.monotonic() - t0
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {code}:\n{''.join(tail)}")
    intervals = [b - a for a, b in zip(stamps, stamps[1:])][WARMUP:]
    return {"steps": len(stamps), "per_step": statistics.median(intervals) if intervals else None,
            "first_step_at": (stamps[0] - t0) if stamps else None, "wall": wall}


def ours_is_step(line: str) -> bool:
    if not line.startswith("CPT_PROGRESS "):
        return False
    try:
        d = json.loads(line.split(" ", 1)[1])
    except ValueError:
        return False
    return d.get("stage") == "train" and d.get("step", 0) > 0


def bare_is_step(line: str) -> bool:
    return line.startswith("{") and ("'loss'" in line or "'reward'" in line) and "train_runtime" not in line


def stage_config(base: Path, train: Path, storage: Path, steps: int, seed: int) -> str:
    from cpt_core.api import CptSpec
    from cpt_core.stage import StageConfig

    spec = CptSpec.model_validate({
        "model": str(base), "method": "grpo", "seed": seed,
        "tasks": [{"name": TASK, "train": str(train), "eval": str(train), "reward": "exact"}],
        "grpo": dict(CONFIG, maxSteps=steps), "rollout": {"engine": "hf"}, "storage": {"uri": str(storage)},
    })
    return StageConfig(run="overhead", namespace="local", stage="train", task_index=1, spec=spec,
                       spec_hash="trainer-overhead").dump_yaml()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny base, 4 steps, 1 repeat")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--base", type=Path, help="a base model directory (default: build one)")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--results", type=Path)
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--snapshot", metavar="REV", help="measure git revision REV (as bench/forgetting --snapshot)")
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 5)
    steps = args.steps or (WARMUP + 4 if args.quick else 40)
    work = (args.work or HERE / "work" / ("quick" if args.quick else "full")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results = args.results or (work / "RESULTS.md" if args.quick else HERE / "RESULTS.md")
    code = cb.use_code(args.snapshot, work)
    if args.base:
        base = args.base.resolve()
    elif args.quick:
        base = work / "base-quick"
        cb.build_base(base, QUICK["base"]["seed"], QUICK["base"]["steps"], args.nice, QUICK["base"]["overrides"])
    else:
        base = work / "base-default"
        cb.build_base(base, 0, None, args.nice)
    from cpt_trainer import synthetic

    train = work / f"{TASK}-train.jsonl"
    synthetic.write_jsonl(synthetic.generate(TASK, 64, seed=0, pool="train"), str(train))
    seed = 0
    # the stage's training seed (cpt_trainer.stages.stage_seed) so both sides sample the same completions
    from cpt_trainer.stages import stage_seed
    from cpt_core.api import CptSpec

    train_seed = stage_seed(CptSpec.model_validate({"model": "m", "tasks": [{"name": TASK, "train": "t", "eval": "e"}],
                                                    "storage": {"uri": "s"}, "seed": seed}), 1, "train")
    started = datetime.datetime.now(datetime.timezone.utc)
    machine = cb.machine()
    nice = cb.nice_prefix(args.nice)
    ours, bare = [], []
    for r in range(repeats):
        with tempfile.TemporaryDirectory(prefix="overhead-", dir=work) as tmp:
            tmp = Path(tmp)
            cfg = tmp / "stage.yaml"
            cfg.write_text(stage_config(base, train, tmp / "store", steps, seed))
            o = timed_lines(nice + [sys.executable, "-m", "cpt_trainer.cli", "train", "--config", str(cfg),
                                    "--workdir", str(tmp / "stagework")], ours_is_step)
            b = timed_lines(nice + [sys.executable, str(HERE / "bare_trl.py"), "--model", str(base), "--train",
                                    str(train), "--out", str(tmp / "bare"), "--steps", str(steps), "--seed",
                                    str(train_seed), "--group-size", str(CONFIG["groupSize"]),
                                    "--prompts-per-step", str(CONFIG["promptsPerStep"]),
                                    "--lr", str(CONFIG["learningRate"]), "--kl", str(CONFIG["klCoef"]),
                                    "--max-tokens", str(CONFIG["maxCompletionTokens"]),
                                    "--temperature", str(CONFIG["temperature"])], bare_is_step)
        for side, res in (("ours", o), ("bare", b)):
            if res["steps"] != steps:
                raise RuntimeError(f"{side}: saw {res['steps']} step lines, expected {steps}")
        ours.append(o)
        bare.append(b)
        print(f"  repeat {r + 1}/{repeats}: ours {o['per_step']:.4f} s/step (wall {o['wall']:.1f} s), "
              f"bare {b['per_step']:.4f} s/step (wall {b['wall']:.1f} s)", flush=True)
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    per_ours, per_bare = med(ours, "per_step"), med(bare, "per_step")
    overhead = per_ours / per_bare - 1
    paired = statistics.median(o["per_step"] / b["per_step"] - 1 for o, b in zip(ours, bare))
    wall_ours, wall_bare = med(ours, "wall"), med(bare, "wall")
    first_ours, first_bare = med(ours, "first_step_at"), med(bare, "first_step_at")
    met = overhead <= GOAL
    table = cb.md_table(
        ["", "ours (cpt-trainer train stage)", "bare TRL GRPOTrainer", "ours / bare - 1"],
        [["seconds per step (median of medians)", f"{per_ours:.4f}", f"{per_bare:.4f}", f"**{overhead:+.1%}**"],
         ["paired per-repeat overhead (median)", "", "", f"{paired:+.1%}"],
         ["per-repeat s/step", ", ".join(f"{o['per_step']:.4f}" for o in ours),
          ", ".join(f"{b['per_step']:.4f}" for b in bare), ""],
         ["process start to first step, s (context)", f"{first_ours:.1f}", f"{first_bare:.1f}",
          f"{first_ours / first_bare - 1:+.1%}"],
         ["whole process wall, s (context)", f"{wall_ours:.1f}", f"{wall_bare:.1f}", f"{wall_ours / wall_bare - 1:+.1%}"]])
    verdict = (f"Goal (<= {GOAL:.0%} per-step overhead): **{'met' if met else 'NOT met'}** "
               f"({overhead:+.1%}; paired {paired:+.1%}).")
    print("\n" + table + "\n" + verdict)
    cmd = "OMP_NUM_THREADS=1 .venv/bin/python bench/trainer_overhead/run.py" + (" --quick" if args.quick else "")
    if args.snapshot:
        cmd += f" --snapshot {args.snapshot}"
    if args.base:
        cmd += f" --base {args.base}"
    if args.repeats or args.steps:
        cmd += (f" --repeats {repeats}" if args.repeats else "") + (f" --steps {steps}" if args.steps else "")
    doc = "\n".join([
        "# bench/trainer_overhead: our GRPO train stage vs bare TRL" + (" (QUICK smoke run)" if args.quick else ""),
        "",
        f"Command: `{cmd}`  ",
        f"Date: {started.strftime('%Y-%m-%d %H:%M UTC')}  ",
        f"Machine: {machine}  ",
        f"Code measured: {code}",
        "",
        f"Config (identical on both sides): base `{base.name}` (cpt-trainer build-base), task `{TASK}`, 64 training "
        f"prompts, GRPO groupSize {CONFIG['groupSize']}, promptsPerStep {CONFIG['promptsPerStep']}, lr "
        f"{CONFIG['learningRate']}, beta (KL) {CONFIG['klCoef']}, maxCompletionTokens {CONFIG['maxCompletionTokens']}, "
        f"temperature {CONFIG['temperature']}, {steps} steps, seed {train_seed}, CPU, one process, "
        f"OMP_NUM_THREADS=1; {repeats} alternating repeats; the first {WARMUP} step intervals of each run skipped.",
        "",
        table,
        verdict,
        "",
    ])
    notes = HERE / "NOTES.md"  # analysis written after reading the results; appended verbatim
    if notes.is_file() and not args.quick:
        doc += "\n" + notes.read_text()
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(doc)
    (work / "summary.json").write_text(json.dumps({"ours": ours, "bare": bare, "overhead": overhead,
                                                   "paired": paired, "steps": steps, "repeats": repeats}, indent=1))
    print(f"wrote {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
