"""Part M's dev curve from the product's step checkpoints, scored after the run by the evaluation engine
(PROTOCOL-v4.md, Amendment 1): the product refuses `evaluation.everySteps` with `evaluation.engine: vllm`
(its curve is scored with hf inside the learner), so the full runs save a step checkpoint every `every` steps
(`spec.checkpoint`) and each is scored on the dev set by v4curve_score.py, through vLLM, like every row.

The product deletes a task's step checkpoints when the train stage publishes the task's checkpoint
(cpt_trainer.step_checkpoints.clear_steps: they are superseded), so they are kept while `cpt run` trains: a
`Keep` thread lists the run's committed step checkpoints (cpt_core.storage.steps.list_steps: step.json written
last, every file present at its size) and hard-links the files an evaluation needs (weights, config, tokenizer;
not the optimizer or RNG states) into RUN/curve/s<step>/, checks each sha256 against step.json, and writes its
own step.json last. A hard link keeps the bytes when the product unlinks its name. The scores are cached in
RUN/curve/scores-<engine>.json; the weights are dropped once scored (step.json keeps their sha256).

What this relies on (checked by tests/bench/test_forgetting_v4_curve.py on a real `cpt run`): a single-process
run's step checkpoint is HF Trainer's folder with the plain full state (model.safetensors), config.json and the
tokenizer; local storage writes each file whole (tmp + rename) and deletes by unlink. A multi-rank (DeepSpeed)
step checkpoint holds rank 0's model.safetensors as well, but only ZeRO-1/2 were checked by the product."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Optional

import yaml

import cptbench as cb
from runs import code_id

HERE = Path(__file__).resolve().parent
SCORER = HERE / "v4curve_score.py"
VLLM_PYTHON = HERE.parents[1] / ".venv-vllm" / "bin" / "python"
SKIP = ("optimizer.pt", "scheduler.pt", "training_args.bin")  # training state, not the model


def wanted(name: str) -> bool:
    """The files of a step checkpoint an evaluation loads: top level, not training state."""
    return "/" not in name and name not in SKIP and not name.startswith("rng_state")


def _sha(path: Path) -> str:
    from cpt_core.storage.base import sha256_file  # the hash step.json's entries were made with

    return sha256_file(path)


def identity(doc: dict) -> dict:
    """What a kept curve belongs to: the run's spec (as runs.py writes it) and the code measured."""
    text = yaml.safe_dump(doc, sort_keys=False)
    return {"spec_sha256": hashlib.sha256(text.encode()).hexdigest(), "code": code_id()}


def curve_dir(run_dir: Path) -> Path:
    return run_dir / "curve"


def valid(run_dir: Path, doc: dict) -> bool:
    f = curve_dir(run_dir) / "for.json"
    return f.is_file() and json.loads(f.read_text()) == identity(doc)


def kept_steps(run_dir: Path) -> dict[int, Path]:
    return {int(d.name[1:]): d for d in sorted(curve_dir(run_dir).glob("s*")) if (d / "step.json").is_file()}


def keep(run_dir: Path, task: str) -> list[int]:
    """Hard-link every committed step checkpoint of task 1 not kept yet; the steps kept now."""
    from cpt_core.storage import StorageError, open_store
    from cpt_core.storage.steps import list_steps

    out, have = run_dir / "out", kept_steps(run_dir)
    if not (out / "steps").is_dir():
        return sorted(have)
    try:
        committed, _ = list_steps(open_store(str(out)), 1, task)
    except (StorageError, OSError):
        return sorted(have)  # being deleted under the listing: the next pass sees the rest
    for ck in committed:
        if ck.step in have:
            continue
        dest, tmp = curve_dir(run_dir) / f"s{ck.step:08d}", curve_dir(run_dir) / f".s{ck.step:08d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        files = [dict(f, name=f["key"][len(ck.prefix) + 1:]) for f in ck.files]
        files = [f for f in files if wanted(f["name"])]
        try:
            for f in files:
                (tmp / f["name"]).hardlink_to(out / f["key"])
        except FileNotFoundError:
            shutil.rmtree(tmp, ignore_errors=True)  # cleared by the product before it was kept: missed
            continue
        if any(_sha(tmp / f["name"]) != f["sha256"] for f in files):
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        (tmp / "step.json").write_text(json.dumps({"step": ck.step, "attempt": ck.attempt, "prefix": ck.prefix,
                                                   "total_steps": ck.total_steps, "files": files}, indent=1))
        tmp.rename(dest)
        have[ck.step] = dest
    return sorted(have)


class Keep:
    """While the block runs (a `cpt run` of `doc` in run_dir), keep its step checkpoints every `period` s. A kept
    curve of another spec or code is removed first (runs.py redoes such a run from scratch)."""

    def __init__(self, run_dir: Path, task: str, doc: dict, period: float = 0.5):
        self.run_dir, self.task, self.doc, self.period = run_dir, task, doc, period
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(self.period):
            keep(self.run_dir, self.task)

    def __enter__(self) -> "Keep":
        d = curve_dir(self.run_dir)
        if not valid(self.run_dir, self.doc):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            (d / "for.json").write_text(json.dumps(identity(self.doc)))
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        keep(self.run_dir, self.task)


def expected_steps(total: int, every: int) -> list[int]:
    """The step checkpoints a run of `total` steps saves: every `every`, none at the last step."""
    return list(range(every, total, every))


def all_kept(run_dir: Path, task: str, every: int) -> bool:
    """Every step checkpoint the finished run saved is kept (train.json gives its number of steps)."""
    train = run_dir / "out" / "tasks" / f"1-{task}" / "train.json"
    if not train.is_file():
        return False
    return set(expected_steps(int(json.loads(train.read_text())["steps"]), every)) <= set(kept_steps(run_dir))


def forget(run_dir: Path) -> None:
    """Drop a finished run and its kept curve, so that runs.py runs it again."""
    for child in ("out", "curve", "done.json"):
        p = run_dir / child
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def scores_file(run_dir: Path, engine: str) -> Path:
    return curve_dir(run_dir) / f"scores-{engine}.json"


def score(run_dir: Path, engine: str, nice: int = 0, python: Optional[Path] = None) -> dict:
    """Score the kept step checkpoints not scored yet (all in one scorer process), cache, drop their weights."""
    f, steps = scores_file(run_dir, engine), kept_steps(run_dir)
    old = json.loads(f.read_text()) if f.is_file() else {"engine": engine, "points": [], "meta": {}}
    todo = [d for s, d in steps.items() if s not in {p["step"] for p in old["points"]}]
    if todo:
        py = python or VLLM_PYTHON
        if not Path(py).exists():
            raise RuntimeError(f"scoring the dev curve with {engine} needs {py}")
        tmp = curve_dir(run_dir) / f"new-{engine}.json"
        cmd = cb.nice_prefix(nice) + [str(py), str(SCORER), str(run_dir), engine, str(tmp), *map(str, todo)]
        t0 = time.monotonic()
        with open(curve_dir(run_dir) / f"score-{engine}.log", "a", encoding="utf-8") as log:
            code = subprocess.run(cmd, env=cb.ENV, stdout=log, stderr=subprocess.STDOUT).returncode
        if code != 0 or not tmp.is_file():
            tail = (curve_dir(run_dir) / f"score-{engine}.log").read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(f"dev curve of {run_dir} ({engine}) exited {code}:\n" + "\n".join(tail))
        new = json.loads(tmp.read_text())
        new["meta"]["wallSeconds"] = round(time.monotonic() - t0, 1)
        old["points"] = sorted(old["points"] + new["points"], key=lambda p: p["step"])
        old["meta"] = dict(new["meta"], calls=old["meta"].get("calls", 0) + 1)
        f.write_text(json.dumps(old, indent=1))
        tmp.unlink()
        for d in todo:  # scored: step.json keeps the weights' sha256
            (d / "model.safetensors").unlink(missing_ok=True)
    return old


def points(run_dir: Path, doc: dict, run: dict, task: str, every: int, engine: str) -> Optional[list[dict]]:
    """Train.json's `curve` as the product's everySteps would give it (step, general: {dev-task: acc}), from the
    scored step checkpoints plus the final row (the evaluate stage's, same engine) at the last step. None when
    the run did not succeed or a registered point is missing (not kept, or not scored yet)."""
    train = run["trains"][1] if len(run["trains"]) > 1 else None
    if run.get("phase") != "Succeeded" or not train or not valid(run_dir, doc):
        return None
    final = run["evals"][-1]
    f = scores_file(run_dir, engine)
    got = {p["step"]: p for p in (json.loads(f.read_text())["points"] if f.is_file() else [])}
    total = int(train["steps"])
    if any(s not in got for s in expected_steps(total, every)) or final.get("engine") != engine:
        return None
    dev = f"dev-{task}"
    pts = [{"step": s, "general": {dev: got[s]["general"][dev]}, "correct": {dev: got[s]["correct"][dev]},
            "engine": got[s]["engine"]} for s in expected_steps(total, every)]
    return pts + [{"step": total, "general": {dev: final["general"][dev]}, "correct": {dev: final["correct"][dev]},
                   "engine": final["engine"], "final": True}]
