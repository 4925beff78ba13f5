"""bench/forgetting v3 / pilot: one `cpt run` of the product, cached in its folder.

spec() writes the ContinualPostTraining resource; run_cpt() runs it (or returns the cached result); cached() is
the read-only lookup the report uses; read_run() reads a finished run back (report.json, train.json, eval.json)."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Optional

import yaml

import cptbench as cb


def code_id() -> str:
    """Which code the runs of this process use: the git snapshot(s) cptbench.use_code put on PYTHONPATH
    (code-<sha12>), or "working tree". Recorded in done.json: a run is reused only under the same code."""
    snaps = [Path(p).parent.name for p in (cb.ENV.get("PYTHONPATH") or "").split(os.pathsep)
             if Path(p).parent.name.startswith("code-")]
    return ",".join(dict.fromkeys(snaps)) or "working tree"


def _reusable(done: Path) -> bool:
    """done.json of the same code (records written before the code was recorded, all under the registered
    snapshot 18aa84a per work/queue.log, count as the same)."""
    return json.loads(done.read_text()).get("code", code_id()) == code_id()


def run_cpt(run_dir: Path, doc: dict, nice: int, cpt: Optional[str] = None) -> dict:
    """`cpt run cpt.yaml` in run_dir, cached: returns {phase, wallSeconds, ...} and the run's folder. A run whose
    report says Succeeded or Failed is final (done.json); one that crashed or was stopped is resumed by `cpt run`
    (it continues after the last committed task) the next time."""
    spec_file, done = run_dir / "cpt.yaml", run_dir / "done.json"
    text = yaml.safe_dump(doc, sort_keys=False)
    if spec_file.is_file() and (spec_file.read_text() != text or (done.is_file() and not _reusable(done))):
        for child in ("out", "done.json", "cpt-run.log", "bench.json"):
            p = run_dir / child
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(text)
    if done.is_file():
        return dict(json.loads(done.read_text()), dir=str(run_dir), reused=True)
    cmd = cb.nice_prefix(nice) + [cpt or cb.tool("cpt"), "run", str(spec_file), "--metrics-port", "-1"]
    t0 = time.monotonic()
    with open(run_dir / "cpt-run.log", "a", encoding="utf-8") as log:
        code = subprocess.run(cmd, env=cb.ENV, stdout=log, stderr=subprocess.STDOUT, cwd=run_dir).returncode
    wall = time.monotonic() - t0
    report_file = run_dir / "out" / "report.json"
    phase = json.loads(report_file.read_text()).get("phase") if report_file.is_file() else None
    if phase not in ("Succeeded", "Failed"):
        tail = (run_dir / "cpt-run.log").read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError(f"cpt run {spec_file} exited {code} (phase {phase}):\n" + "\n".join(tail))
    res = {"phase": phase, "wallSeconds": round(wall, 1), "exit": code, "code": code_id(),
           "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    done.write_text(json.dumps(res))
    print(f"  {run_dir.relative_to(run_dir.parents[2])}: {phase} in {wall:.0f} s", flush=True)
    return dict(res, dir=str(run_dir), reused=False)


def run_report(run_dir: Path, doc: dict, nice: int = 10) -> dict:
    """Protocols v1/v2 and bench/rif_cost: run_cpt, a run that did not succeed is an error, and the result is the
    run's report.json plus `wallSeconds` and `reused`. A folder from before the one executor (bench.json beside a
    Succeeded report, no done.json) is adopted as finished rather than run again."""
    bench, report_file, done = run_dir / "bench.json", run_dir / "out" / "report.json", run_dir / "done.json"
    if bench.is_file() and report_file.is_file() and not done.is_file() and \
            json.loads(report_file.read_text()).get("phase") == "Succeeded":
        done.write_text(json.dumps({"phase": "Succeeded", **json.loads(bench.read_text())}))
    res = run_cpt(run_dir, doc, nice)
    report = json.loads(report_file.read_text())
    if res["phase"] != "Succeeded":
        raise RuntimeError(f"cpt run {run_dir / 'cpt.yaml'}: phase {res['phase']}: {report.get('message')}")
    return dict(report, wallSeconds=res["wallSeconds"], reused=res["reused"])


def spec(name: str, model: Path, run_dir: Path, arm: dict, tasks: list[tuple], general: list[tuple], seed: int,
         tokens: int, every: Optional[int], engine: str = "hf", max_steps: Optional[int] = None,
         eval_engine: Optional[str] = None) -> dict:
    """A ContinualPostTraining resource. tasks/general: (name, train file or None, eval file, reward).
    eval_engine (v4 Part M) only when set, so the specs of v3 and the pilot stay byte for byte what they were."""
    rel = lambda p: os.path.relpath(p, run_dir)  # noqa: E731
    s = {"model": rel(model), "method": arm["method"], "seed": seed,
         "tasks": [{"name": n, "train": rel(tr), "eval": rel(ev), "reward": r} for n, tr, ev, r in tasks],
         "general": [{"name": n, "eval": rel(ev), "reward": r} for n, _, ev, r in general]}
    for part in ("grpo", "sft", "rif"):
        if part in arm:
            s[part] = dict(arm[part])
    if max_steps:  # a matched rerun: the learner's optimizer steps for this task
        s["sft" if arm["method"] in ("sft", "self-sft") else "grpo"]["maxSteps"] = max_steps
    s["evaluation"] = {"maxCompletionTokens": tokens, **({"everySteps": every} if every else {}),
                       **({"engine": eval_engine} if eval_engine else {})}
    s["rollout"] = {"engine": engine}
    s["retry"] = {"limit": 0, "backoffSeconds": 0}
    s["storage"] = {"uri": "out"}
    if arm.get("noSignal"):
        s["noSignal"] = arm["noSignal"]
    return {"apiVersion": "cpt.dev/v1alpha1", "kind": "ContinualPostTraining", "metadata": {"name": name},
            "spec": s}


def read_run(res: dict) -> dict:
    """A finished run's report plus, per task, train.json (curve, steps) and eval.json (per-prompt results)."""
    out = Path(res["dir"]) / "out"
    report = json.loads((out / "report.json").read_text())
    names = ["base"] + report["tasks"]
    evals, trains = [], []
    for i, n in enumerate(names):
        d = out / "tasks" / f"{i}-{n}"
        evals.append(json.loads((d / "eval.json").read_text()) if (d / "eval.json").is_file() else None)
        trains.append(json.loads((d / "train.json").read_text()) if (d / "train.json").is_file() else None)
    return dict(report, evals=evals, trains=trains, run=res)


def cached(run: bool, run_dir: Path, doc: dict, nice: int, cpt: Optional[str] = None) -> Optional[dict]:
    """run: run_cpt (cached or not). Otherwise the cached result when run_dir holds a finished run of exactly this
    spec, else None."""
    if run:
        return run_cpt(run_dir, doc, nice, cpt)
    done = run_dir / "done.json"
    if done.is_file() and (run_dir / "cpt.yaml").is_file() and _reusable(done) and \
            (run_dir / "cpt.yaml").read_text() == yaml.safe_dump(doc, sort_keys=False):
        return dict(json.loads(done.read_text()), dir=str(run_dir), reused=True)
    return None
