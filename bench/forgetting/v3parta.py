"""bench/forgetting protocol v3, Part A (tiny char model): bases, data, base evaluation, admission, sequences,
probes and the (base, seed) pairs' full and matched runs (PROTOCOL-v3.md). Nothing runs unless asked (run=True);
otherwise every method returns what is cached."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

import cptbench as cb
import stats as st
from protocols import BASE_SEEDS, V3, smoke_protocol
from runs import cached, read_run, spec

ROOT = Path(__file__).resolve().parents[2]


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

    def base_eval(self, b: int, run: bool = True) -> Optional[dict]:
        """Greedy accuracy of base b on run seed 0's 500-prompt eval sets (every candidate and copy), cached.
        With run=False (report only) the cache or None: a report never starts an evaluation."""
        built = self.base_if_built(b)
        if built is None:
            return None
        path, _ = built
        out = self.work / "base-eval" / f"{path.name}{'-' + str(b) if self.smoke else ''}.json"
        if out.is_file():
            return json.loads(out.read_text())
        if not run:
            return None
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
        return cached(run, run_dir, doc, self.nice, cpt)

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
