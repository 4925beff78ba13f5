"""bench/forgetting protocol v4 (PROTOCOL-v4.md), executed: Part T (shared start on the tiny model) and Part M (the
SmolLM2 mechanism experiment); Part G is reported "not run: no device" unless run on a GPU.

    OMP_NUM_THREADS=1 .venv/bin/python bench/forgetting/run.py --protocol v4 --snapshot REV [--part T,M] [--pairs N]
    ... --report-only        rewrite RESULTS.md's v4 section from the cached runs, run nothing
    ... --quick              Part T's wiring on the shipped tiny base (one pair, two arms, tiny sets), into --work

Every run is a `cpt run` of the product, cached by runs.py (a finished run is never redone, so a stopped queue
resumes with the same command). The shared logic of both parts is `compare`: a group of arms trained from one
starting model, admission against the starting model, the matched level of each compared pair, each arm's matched
point read from its dev curve, and a matched rerun stopped at that step (none when the matched step is the full
run's last: that run already stopped there). Every matched evaluation keeps the dev set as a benchmark, so the
level a rerun reached is measured, not assumed. The per-prompt flags behind every interval stay in the runs'
eval.json files (runs.read_run), from which v4doc.py recomputes everything.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import cptbench as cb
import sections
import stats as st
import v4curve
import v4doc
from protocols import PAIR_ORDER, V3, V4_M, V4_T, v4_quick
from runs import cached, read_run, spec
from v3parta import PartA
from v3pilot import Pilot

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def dev_points(run: dict, task: str) -> list[tuple[int, float]]:
    """The dev curve of the run's (only) task: (step, dev accuracy) per checkpoint."""
    return st.dev_curve(run, 1, task)


def final_dev(run: Optional[dict], task: str) -> Optional[float]:
    """The full-budget run's final dev point (PROTOCOL-v4.md's admission bar), None if it did not succeed."""
    if run is None or run.get("phase") != "Succeeded":
        return None
    pts = dev_points(run, task)
    return pts[-1][1] if pts else run["evals"][-1]["general"].get(f"dev-{task}")


class Group:
    """Arms trained from one starting model on one task, with the general sets each evaluation scores (the dev
    set last). `launch(name, arm, max_steps)` returns the cached run (read back) or None."""

    def __init__(self, task: str, arms: list, launch, margin: float, gain: float, parallel: int = 1, read=None):
        self.task, self.arms, self.launch, self.margin, self.gain = task, arms, launch, margin, gain
        self.records: list[dict] = []  # every run read (done.json's fields): the code each was measured with
        jobs = [lambda a=a: self._read(self.launch(a, a, None), read) for a in arms]
        self.full = dict(zip(arms, cb.run_all(jobs, parallel)))

    def _read(self, res, read=None):
        if not res:
            return None
        self.records.append(res)
        return (read or read_run)(res)

    def start_dev(self) -> Optional[float]:
        run = next((r for r in self.full.values() if r and r["evals"] and r["evals"][0]), None)
        return run["evals"][0]["general"].get(f"dev-{self.task}") if run else None

    def start_row(self) -> Optional[dict]:
        run = next((r for r in self.full.values() if r and r["evals"] and r["evals"][0]), None)
        return run["evals"][0] if run else None

    def admission(self) -> dict:
        start = self.start_dev()
        table = {a: {"final": final_dev(r, self.task)} for a, r in self.full.items()}
        for e in table.values():
            e["gain"] = None if e["final"] is None or start is None else e["final"] - start
            e["admitted"] = e["gain"] is not None and e["gain"] >= self.gain - 1e-12
        return {"start": start, "arms": table}

    def matched(self, a: str, b: str, level: Optional[float] = None) -> dict:
        """Both arms at the common level (the lower final dev, or `level` when given): their matched steps, the
        evaluation row at that step (rerun when needed) and the dev level each reached."""
        adm = self.admission()
        if not (adm["arms"][a]["admitted"] and adm["arms"][b]["admitted"]):
            return {"status": "not decided: admission"}
        lv = level if level is not None else st.match_level(adm["arms"][a]["final"], adm["arms"][b]["final"],
                                                              adm["start"], self.margin)
        if lv is None:
            return {"status": "not matched: no common gain"}
        out = {"status": "matched", "level": lv}
        for arm in (a, b):
            out[arm] = self.at_level(arm, lv)
        if any(out[arm] is None for arm in (a, b)):
            out["status"] = "reruns not run yet"
        return out

    def at_level(self, arm: str, level: float) -> Optional[dict]:
        run = self.full[arm]
        pts = dev_points(run, self.task)
        step = st.first_at(pts, level)
        if step is None:
            return None
        if step == pts[-1][0]:
            row, rerun = run["evals"][-1], None
        else:
            res = self.launch(f"{arm}-m{step}", arm, step)
            if res is None:
                return None
            rerun = self._read(res)
            if rerun.get("phase") != "Succeeded":
                return {"step": step, "phase": rerun.get("phase")}
            row = rerun["evals"][-1]
        return {"step": step, "row": row, "reached": row["general"].get(f"dev-{self.task}"),
                "rerun": rerun["run"]["dir"] if rerun else None}


# ------------------------------------------------------------------------------------------------ Part T

class PartT:
    """Per (base, seed) pair: task 1 trained once with grpo to a shared checkpoint; each task 2 from it."""

    def __init__(self, work: Path, nice: int, quick: bool, v3_work: Path, parallel: int = 1):
        self.p = v4_quick()[0] if quick else V4_T
        self.work, self.nice, self.quick, self.parallel = work, nice, quick, parallel
        self.a = PartA(work if quick else v3_work, nice, smoke=quick)
        self.records: list[dict] = []  # the shared task-1 runs read (their done.json)

    def arm(self, name: str) -> dict:
        return V3["arms"][name]

    def _steps(self, steps: Optional[int]) -> Optional[int]:
        return steps or self.p.get("steps")

    def shared(self, run: bool, b: int, s: int) -> Optional[Path]:
        base = self.a.base_if_built(b)
        if base is None:
            return None
        d, t1 = self.a.data(s), self.p["task1"]
        run_dir = self.work / "T" / f"b{b}-s{s}" / f"shared-{t1}"
        doc = spec(f"t-shared-b{b}s{s}", base[0], run_dir, self.arm(self.p["task1_arm"]),
                   [(t1, d / f"{t1}-train.jsonl", d / f"{t1}-eval.jsonl", self.a.reward(t1))], [], s,
                   V3["tokens"], None, max_steps=self._steps(None))
        res = cached(run, run_dir, doc, self.nice)
        if not res or res["phase"] != "Succeeded":
            return None
        self.records.append(res)
        return run_dir / "out" / "tasks" / f"1-{t1}" / "checkpoint"

    def group(self, run: bool, b: int, s: int, task2: str, ckpt: Path) -> Group:
        d, t1 = self.a.data(s), self.p["task1"]
        sets = [t1, self.p["ceiling_probe"], *self.p["probes"][task2]]
        general = [(g, None, d / f"{g}-eval.jsonl", self.a.reward(g)) for g in sets]
        general.append((f"dev-{task2}", None, d / f"{task2}-dev.jsonl", self.a.reward(task2)))
        task = [(task2, d / f"{task2}-train.jsonl", d / f"{task2}-eval.jsonl", self.a.reward(task2))]
        root = self.work / "T" / f"b{b}-s{s}" / task2

        def launch(name, arm, steps):
            run_dir = root / name
            doc = spec(f"t-{task2[:3]}-{name}-b{b}s{s}", ckpt, run_dir, self.arm(arm), task, general, s,
                       V3["tokens"], None if steps else self.p.get("every", V3["every"]),
                       max_steps=self._steps(steps))
            return cached(run, run_dir, doc, self.nice)
        return Group(task2, self.p["arms"], launch, self.p["match_margin"], self.p["admission_gain"], self.parallel)

    def collect(self, run: bool, max_pairs: Optional[int]) -> dict:
        order = [(0, 0)] if self.quick else PAIR_ORDER
        pairs = {}
        for k, (b, s) in enumerate(order):
            go = run and (max_pairs is None or k < max_pairs)
            ckpt = self.shared(go, b, s)
            if ckpt is None:
                continue
            pairs[(b, s)] = {t2: self.group(go, b, s, t2, ckpt) for t2 in self.p["tasks2"]}
        bases = {}  # the bases the pairs start from, as built here (Part T's execution note: v3's were not kept)
        for b in sorted({b for b, _ in order}):
            built = self.a.base_if_built(b)
            if built is not None:
                bases[b] = {k: built[1].get(k) for k in ("recipe_hash", "eval_accuracy", "seconds")}
        return {"protocol": self.p, "pairs": pairs, "order": order, "records": self.records, "bases": bases}


# ------------------------------------------------------------------------------------------------ Part M

class PartM:
    """SmolLM2-135M-Instruct (imported as for the pilot), add2 from the base with five arms, vLLM scoring."""

    def __init__(self, work: Path, nice: int):
        self.p, self.work, self.nice = V4_M, work, nice
        self.pilot = Pilot(work, nice, "cpu")  # the import and the engine choice are the pilot's

    def data(self) -> Path:
        """make.py --solutions (seed 0) plus the answer-only training file and the 200-prompt probe sets."""
        import importlib.util

        d = self.work / "data-M"
        if (d / "complete").is_file():
            return d
        path = ROOT / "examples" / "data" / "smollm2-pilot" / "make.py"
        loader = importlib.util.spec_from_file_location("pilot_make", path)
        make = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(make)
        make.write_all(d, seed=0, solutions=True)
        task = self.p["task"]
        rows = [json.loads(ln) for ln in (d / f"{task}-train.jsonl").read_text().splitlines()]
        (d / f"{task}-train-answer.jsonl").write_text(
            "".join(json.dumps({k: v for k, v in r.items() if k != "solution"}) + "\n" for r in rows))
        for probe in self.p["probes"]:  # other tasks than add2: disjoint from its sets by construction
            probs = make.problems(probe)
            make.random.Random(f"v4-probe:{probe}").shuffle(probs)
            (d / f"{probe}-probe.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in make.rows(probe, probs[:self.p["n_probe"]])))
        (d / "complete").write_text("")
        return d

    def group(self, run: bool, seed: int) -> Group:
        d, task, p = self.data(), self.p["task"], self.p
        eng, cpt = self.pilot.engine()
        reward = lambda t: "exact" if t == "capitals" else "numeric"  # noqa: E731
        general = [(g, None, d / f"{g}-probe.jsonl", reward(g)) for g in p["probes"]]
        general += [(g, None, d / f"{g}-eval.jsonl", reward(g)) for g in p["extra_probes"]]
        general.append((f"dev-{task}", None, d / f"{task}-dev.jsonl", "numeric"))
        docs: dict[str, dict] = {}

        def launch(name, arm, steps):
            train = d / f"{task}-train{'-answer' if p['arms'][arm].get('train') == 'answer' else ''}.jsonl"
            cfg = {k: v for k, v in p["arms"][arm].items() if k != "train"}
            run_dir = self.work / "M" / f"s{seed}" / name
            doc = spec(f"m-{name}-s{seed}", self.pilot.model, run_dir, cfg,
                       [(task, train, d / f"{task}-eval.jsonl", "numeric")], general, seed, p["tokens"],
                       None, engine=eng, max_steps=steps, eval_engine=p["engine"])
            if steps:  # a matched rerun: its final row is all it gives
                return cached(run, run_dir, doc, self.nice, cpt)
            # Amendment 1: the dev curve from step checkpoints every `every` steps (all kept), scored by vLLM
            doc["spec"]["checkpoint"] = {"everySteps": p["every"], "everyMinutes": 0, "keep": 100}
            docs[str(run_dir)] = doc
            if not run:
                return cached(False, run_dir, doc, self.nice, cpt)
            for attempt in (1, 2):  # a finished run whose step checkpoints were not all kept is redone once
                with v4curve.Keep(run_dir, task, doc):
                    res = cached(True, run_dir, doc, self.nice, cpt)
                if res["phase"] != "Succeeded" or v4curve.all_kept(run_dir, task, p["every"]) or attempt == 2:
                    return res
                print(f"  {run_dir}: step checkpoints not all kept; running it again", flush=True)
                v4curve.forget(run_dir)

        def read(res):
            out = read_run(res)
            doc = docs[res["dir"]]
            if run and out.get("phase") == "Succeeded" and v4curve.valid(Path(res["dir"]), doc):
                v4curve.score(Path(res["dir"]), p["engine"], self.nice)
            pts = v4curve.points(Path(res["dir"]), doc, out, task, p["every"], p["engine"])
            if len(out["trains"]) > 1 and out["trains"][1] is not None:
                out["trains"][1] = dict(out["trains"][1], curve=pts or [])
            out["curve_complete"] = pts is not None
            return out
        return Group(task, list(p["arms"]), launch, p["match_margin"], p["admission_gain"], read=read)

    def collect(self, run: bool) -> dict:
        imp = self.pilot.import_model(run)
        if imp is None:
            return {"protocol": self.p, "import": None, "seeds": {}}
        return {"protocol": self.p, "import": imp, "seeds": {s: self.group(run, s) for s in self.p["seeds"]}}


def main(args) -> int:
    """run.py --protocol v4 (arguments parsed by run.py)."""
    quick = args.quick or args.smoke
    work = (args.work or HERE / "work" / ("v4-quick" if quick else "v4")).resolve()
    results = args.results or (work / "RESULTS.md" if quick else HERE / "RESULTS.md")
    work.mkdir(parents=True, exist_ok=True)
    cb.use_code(args.snapshot, work)  # the code the runs of this pass use; RESULTS names the runs' own records
    parts = set(args.part.split(","))
    run = not args.report_only
    t0 = time.monotonic()
    data = {"T": PartT(work, args.nice, quick, HERE / "work" / "v3", args.parallel or (2 if quick else 1)).collect(run and "T" in parts, args.pairs)}
    data["M"] = None if quick else PartM(work, args.nice).collect(run and "M" in parts)
    data.update(snapshot=args.snapshot, machine=cb.machine(), quick=quick,
                invocation_s=time.monotonic() - t0)
    snap = f" --snapshot {args.snapshot}" if args.snapshot else ""
    body = v4doc.section(data, f"OMP_NUM_THREADS=1 .venv/bin/python bench/forgetting/run.py --protocol v4{snap}")
    sections.write_marked("v4", body, results)
    print(f"wrote {results}", flush=True)
    return 0
