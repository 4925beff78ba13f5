"""bench/forgetting protocols v1 and v2: SFT vs GRPO vs RIF-GRPO vs multi-task on the same task sequence, same
seeds, same budget (`run.py [--protocol v1|v2] [--quick] [--seeds 0 1 2]`). The registered text of both follows;
their settings are protocols.V1 / protocols.V2.

Every sequential run is a `cpt run FILE` of the product (report.json read back); the multi-task baseline is
`cpt-trainer multitask`. Prints one comparison table and writes it, with the protocol, to RESULTS.md.

PROTOCOL (fixed before any result was looked at; see PROTOCOL below and the top of RESULTS.md)
- One tiny base model (`cpt-trainer build-base --seed 0`, default recipe: 1,500 pre-training steps, so the general
  skill `copy` is held firmly; DESIGN.md section 1: 300 steps were too few). Built once and shared by all seeds:
  a seed changes the drawn training pools / eval sets and every sampling and shuffling seed, not the base.
- Tasks in order add -> sub -> count (the base solves them partly: build-base stops teaching them at 35%
  greedy accuracy), general benchmark `copy`. Training pools are fresh: drawn from the `train` pool, which is
  disjoint from what the base was pre-trained on; eval sets from the `eval` pool (disjoint from both).
- Same learning rate (5e-4) and same budget for SFT and GRPO: 16 epochs over the pool, 8 prompts per optimizer
  step (GRPO: x 8 completions; SFT: batch 8), i.e. the same number of optimizer steps per task. RIF-GRPO keeps
  the same epochs, so its step count shrinks with the pool it keeps (that is RIF's saving).
- Matched-learning SFT control (the rule): on seed 0 only, run SFT with maxSteps per task taken from the fixed
  schedule CONTROL_SCHEDULE in increasing order, and pick the smallest budget whose plasticity reaches GRPO's
  seed-0 plasticity; if none does, the full SFT budget is the control. That budget is then run on every seed.
- Multi-task baseline: GRPO on the union of the three pools, same hyper-parameters and epochs (so the same
  total number of optimizer steps as the three sequential GRPO tasks), evaluated once at the end.
- All numbers as measured; mean ± sample std over seeds.

PROTOCOL v2 (`--protocol v2`; registered 2026-11-22 after v1's results were seen, before any v2 run)
- Why: under v1 (lr 5e-4) GRPO collapsed on the current base (plasticity -0.07, general skill copy 1.00 -> 0.01,
  sort driven from ~0.3 to ~0.1), so v1 cannot compare SFT and GRPO at equal learning. The trainer's author
  measured that lr 3e-4 already over-trains this base and recommends 1e-4 (examples/local.yaml uses 1e-4).
- The only change: learning rate 1e-4 for SFT and for GRPO / RIF-GRPO / multi-task GRPO (the same lr for both, as
  DESIGN.md section 1 requires). Everything else is v1's: the same base (v1's build, work/full/base-seed0-default,
  reused, not rebuilt), tasks, pools and eval sets (v1's data directories), budgets (16 epochs), seeds 0 1 2, RIF
  settings, matched-learning SFT control rule (schedule [5, 10, 20, 40, 80] on seed 0, smallest budget whose
  plasticity reaches GRPO's) and multi-task baseline. Its runs go to work/full/runs-v2/ (v1's runs stay), and its
  table is written as the section "Protocol v2 (lr 1e-4)" at the end of RESULTS.md (v1's part is left as it is).
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import cptbench as cb
from protocols import QUICK, RUNS_DIR, V1, V2
from runs import run_report
from results_doc import COLUMNS, METHODS, describe, render, render_matrices, run_header, v2_section
from sections import V2_HEADING, splice

HERE = Path(__file__).resolve().parent


class Bench:
    def __init__(self, p: dict, work: Path, nice: int, parallel: int, runs: str = "runs"):
        self.p, self.work, self.nice, self.parallel, self.runs = p, work, nice, parallel, runs
        self.base = work / f"base-seed{p['base']['seed']}-{p['base']['steps'] or 'default'}"

    def prepare(self) -> dict:
        """Build (or reuse) the base model; resolve the task list from its recipe when the protocol says so."""
        b = self.p["base"]
        report = cb.build_base(self.base, b["seed"], b["steps"], self.nice, b.get("overrides"))
        self.p["base_report"] = {k: report[k] for k in ("params", "seconds", "eval_accuracy")}
        if self.p["tasks"] == "base-targets":
            self.p["tasks"] = list(report["config"]["targets"])
        return report

    def data(self, seed: int) -> Path:
        d = self.work / "data" / f"seed{seed}-n{self.p['n_train']}-{self.p['n_eval']}"
        if not (d / f"{self.p['tasks'][-1]}-train.jsonl").is_file():
            cb.write_datasets(d, self.p["tasks"], self.p["general"], seed, self.p["n_train"], self.p["n_eval"])
        return d

    def doc(self, name: str, method: str, seed: int, run_dir: Path, sft_steps=None) -> dict:
        p = self.p
        sft = dict(p["sft"], **({"maxSteps": sft_steps} if sft_steps else {}))
        return cb.spec_doc(name, self.base, self.data(seed), run_dir, method, p["tasks"], p["general"], seed,
                           p["grpo"], sft, p["rif"], p["evaluation"], p.get("noSignal"))

    def sequential(self, method: str, seed: int, sft_steps=None):
        tag = method if sft_steps is None else f"sft-steps{sft_steps}"
        name = f"{tag}-s{seed}"
        run_dir = self.work / self.runs / name

        def job():
            t0 = time.monotonic()
            res = run_report(run_dir, self.doc(name, method, seed, run_dir, sft_steps), self.nice)
            print(f"  {name}: AA {res['averageAccuracy']:.3f} plasticity {res['plasticity']:+.3f} "
                  f"BWT {res['backwardTransfer']:+.3f} wall {res['wallSeconds']:.0f} s"
                  + (" (reused)" if res.get("reused") else f" ({time.monotonic() - t0:.0f} s)"), flush=True)
            return res
        return job

    def multitask(self, seed: int):
        name = f"multitask-s{seed}"
        run_dir = self.work / self.runs / name

        def job():
            res = cb.run_multitask(run_dir, self.doc(name, self.p["multitask_method"], seed, run_dir), self.nice)
            print(f"  {name}: tasks {res['eval']['tasks']} wall {res['wallSeconds']:.0f} s"
                  + (" (reused)" if res.get("reused") else ""), flush=True)
            return res
        return job

    def run(self) -> dict:
        p, seeds = self.p, self.p["seeds"]
        self.prepare()
        results: dict[str, dict[int, dict]] = {m: {} for m in METHODS}
        # 1. the three sequential methods and the multi-task baseline, every seed (one at a time in full mode)
        jobs, keys = [], []
        for seed in seeds:
            for method in ("sft", "grpo", "rif-grpo"):
                jobs.append(self.sequential(method, seed))
                keys.append((method, seed))
            jobs.append(self.multitask(seed))
            keys.append(("multitask", seed))
        for (method, seed), res in zip(keys, cb.run_all(jobs, self.parallel)):
            results[method][seed] = res
        # 2. matched-learning SFT control: the rule, on the first seed only
        target = results["grpo"][seeds[0]]["plasticity"]
        scan, scan_runs = [], []
        chosen = None
        for steps in p["control_schedule"]:
            res = self.sequential("sft", seeds[0], steps)()
            scan.append({"maxSteps": steps, "plasticity": res["plasticity"], "bwt": res["backwardTransfer"]})
            scan_runs.append(res)
            if res["plasticity"] is not None and res["plasticity"] >= target:
                chosen = steps
                results["sft-matched"][seeds[0]] = res
                break
        if chosen is None:
            results["sft-matched"] = dict(results["sft"])
        else:
            jobs = [self.sequential("sft", seed, chosen) for seed in seeds[1:]]
            for seed, res in zip(seeds[1:], cb.run_all(jobs, self.parallel)):
                results["sft-matched"][seed] = res
        return {"results": results, "control": {"target_plasticity": target, "scan": scan, "chosen": chosen,
                                                 "scan_runs": scan_runs}}


# ------------------------------------------------------------------------------------------------ table

def method_metrics(method: str, res: dict, base_row: dict) -> dict:
    """One run's figures. base_row: row 0 of the same seed (tasks and general of the base model)."""
    if method == "multitask":
        tasks, general = res["eval"]["tasks"], res["eval"]["general"]
        base_t, base_g = base_row["tasks"], base_row["general"]
        aa = sum(tasks.values()) / len(tasks)
        plast = sum(tasks[t] - base_t[t] for t in tasks) / len(tasks)
        gen = sum(general[b] - base_g[b] for b in general) / len(general) if general else None
        return {"aa": aa, "plasticity": plast, "bwt": None, "forgetting": None, "general": gen,
                "filtered": None, "tokens": res["train"].get("rollout_tokens", 0),
                "steps": res["train"].get("steps", 0), "wall": res["wallSeconds"]}
    fractions = [t["filteredFraction"] for t in res["perTask"] if t["index"] > 0 and t["filteredFraction"] is not None]
    drop = res.get("generalDrop")
    return {"aa": res["averageAccuracy"], "plasticity": res["plasticity"], "bwt": res["backwardTransfer"],
            "forgetting": res["forgetting"], "general": None if drop is None else -drop,
            "filtered": sum(fractions) / len(fractions) if fractions else None,
            "tokens": res["totals"]["rolloutTokens"], "steps": res["totals"]["learnerSteps"],
            "wall": res["wallSeconds"]}


def base_row(report: dict) -> dict:
    tasks = dict(zip(report["tasks"], report["matrix"][0]))
    general = dict(zip(report["benchmarks"], report["general"][0])) if report["general"] else {}
    return {"tasks": tasks, "general": general}


def summarize(out: dict, p: dict) -> dict:
    results, seeds = out["results"], p["seeds"]
    per = {m: {s: method_metrics(m, results[m][s], base_row(results["grpo"][s])) for s in seeds if s in results[m]}
           for m in METHODS}
    col = lambda m, k: [per[m][s][k] for s in seeds if s in per[m]]  # noqa: E731

    def paired(num_m, den_m, key, absolute=False):
        vals = []
        for s in seeds:
            a, b = per[num_m].get(s, {}).get(key), per[den_m].get(s, {}).get(key)
            if absolute and cb.finite(a) and cb.finite(b):
                a, b = abs(a), abs(b)
            r = cb.ratio(a, b)
            if r is not None:
                vals.append(r)
        return vals

    def ratio_of_means(num_m, den_m, key):
        a, b = cb.mean_std(col(num_m, key))[0], cb.mean_std(col(den_m, key))[0]
        return cb.ratio(abs(a), abs(b)) if cb.finite(a) and cb.finite(b) else None

    ratios = {
        "bwt_sft_over_grpo": ratio_of_means("sft", "grpo", "bwt"),
        "bwt_sft_over_grpo_per_seed": paired("sft", "grpo", "bwt", absolute=True),
        "bwt_matched_over_grpo": ratio_of_means("sft-matched", "grpo", "bwt"),
        "bwt_matched_over_grpo_per_seed": paired("sft-matched", "grpo", "bwt", absolute=True),
        "general_sft_over_grpo": ratio_of_means("sft", "grpo", "general"),
        "cost_tokens_grpo_over_rif": paired("grpo", "rif-grpo", "tokens"),
        "cost_steps_grpo_over_rif": paired("grpo", "rif-grpo", "steps"),
        "cost_wall_grpo_over_rif": paired("grpo", "rif-grpo", "wall"),
        "aa_rif_minus_grpo": [per["rif-grpo"][s]["aa"] - per["grpo"][s]["aa"] for s in seeds
                              if s in per["rif-grpo"] and s in per["grpo"]],
    }
    return {"per": per, "ratios": ratios, "control": out["control"]}


def protocol_and_work(args) -> tuple[dict, Path]:
    """The v1/v2 protocol (or the quick one) with --seeds applied, a private copy, and its work folder, created:
    shared by this runner and bench/rif_cost, which reuses these runs."""
    p = json.loads(json.dumps(QUICK if args.quick else {"v1": V1, "v2": V2}[args.protocol]))
    if args.seeds:
        p["seeds"] = args.seeds
    work = (args.work or HERE / "work" / ("quick" if args.quick else "full")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    return p, work


def main(args) -> int:
    """run.py --protocol v1|v2 (arguments parsed by run.py)."""
    v2 = args.protocol == "v2" and not args.quick
    p, work = protocol_and_work(args)
    results = args.results or (work / "RESULTS.md" if args.quick else HERE / "RESULTS.md")
    parallel = args.parallel or (3 if args.quick else 1)
    code = cb.use_code(args.snapshot, work)
    started = datetime.datetime.now(datetime.timezone.utc)
    machine = cb.machine()
    t0 = time.monotonic()
    out = Bench(p, work, args.nice, parallel, RUNS_DIR[args.protocol]).run()
    elapsed = time.monotonic() - t0
    summary = summarize(out, p)
    table = render(summary, p)
    print("\n" + table)
    cmd = "OMP_NUM_THREADS=1 .venv/bin/python bench/forgetting/run.py" + (" --quick" if args.quick else "") + (
        " --protocol v2" if v2 else "") + (
        f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds else "") + (
        f" --snapshot {args.snapshot}" if args.snapshot else "")
    if v2:
        doc = v2_section(p, out, table, cmd, started, elapsed, machine, code)
        doc = splice(results.read_text() if results.is_file() else "", doc, V2_HEADING)  # v1, v3, pilot kept
        summary_file = work / "summary-v2.json"
    else:
        doc = "\n".join([
            "# bench/forgetting: SFT vs GRPO vs RIF-GRPO vs multi-task" + (" (QUICK smoke run)" if args.quick else ""),
            "",
            "## Protocol (fixed in bench/forgetting/run.py before any result was looked at)",
            "",
            describe(p),
            "",
            *run_header(out, cmd, started, elapsed, machine, code),
            "",
            "## Results (mean ± std over seeds " + ", ".join(map(str, p["seeds"])) + ")",
            "",
            COLUMNS,
            "",
            table,
            "## Per-seed accuracy matrices",
            "",
            render_matrices(out, p),
        ])
        notes = HERE / "NOTES.md"  # analysis written after reading the results; appended verbatim
        if notes.is_file() and not args.quick:
            doc += "\n" + notes.read_text()
        if results.is_file() and not args.quick:  # keep the other protocols' sections (v2, v3, pilot)
            doc = splice(results.read_text(), doc)
        summary_file = work / "summary.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(doc)
    summary_file.write_text(json.dumps({"protocol": p, "summary": summary, "elapsed_s": elapsed},
                                       indent=1, default=str))
    print(f"wrote {results} ({elapsed / 60:.1f} min)")
    return 0

