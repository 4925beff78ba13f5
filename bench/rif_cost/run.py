#!/usr/bin/env python
"""bench/rif_cost: what RIF saves. rif-grpo vs grpo on the same task sequence, seeds and budget.

    OMP_NUM_THREADS=1 .venv/bin/python bench/rif_cost/run.py [--quick] [--seeds 0 1 2] [--protocol v1|v2]

The runs are bench/forgetting's grpo and rif-grpo runs (same protocol constant, same scratch directory): when
bench/forgetting has already run them, their report.json files are reused (the spec files must be
byte-identical, else they are run again); otherwise this script runs them itself through `cpt run`.
Per task: rollout tokens (RIF's filter rollouts included), learner steps, stage seconds (filter + train, measured
in the stage processes) and their grpo / rif-grpo ratios; final AA and BWT. Goal (issue 9): rif-grpo at least
1.7x cheaper per task at AA within 1 point (0.01).

`--protocol v2` uses bench/forgetting's protocol v2 (lr 1e-4 for SFT and GRPO, registered after v1; see
bench/forgetting/run.py) and its runs (work/full/runs-v2/); its table is written as the section
"Protocol v2 (lr 1e-4)" at the end of RESULTS.md, after v1's part, which is left as it is.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORGETTING = HERE.parent / "forgetting"
sys.path.insert(0, str(FORGETTING))

import cptbench as cb  # noqa: E402
from protocols import RUNS_DIR  # noqa: E402
from results_doc import describe  # noqa: E402
from sections import V2_HEADING  # noqa: E402
from v12 import Bench, protocol_and_work  # noqa: E402

GOAL_RATIO = 1.7
GOAL_AA = 0.01


def per_task(report: dict) -> list[dict]:
    out = []
    for t in report["perTask"]:
        if t["index"] == 0:
            continue
        secs = t["seconds"]
        out.append({"name": t["name"], "tokens": t["rolloutTokens"], "steps": t["learnerSteps"],
                    "seconds": secs.get("filter", 0.0) + secs.get("train", 0.0),
                    "filter_seconds": secs.get("filter", 0.0), "filtered": t["filteredFraction"]})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (bench/forgetting's quick protocol)")
    ap.add_argument("--seeds", type=int, nargs="+")
    ap.add_argument("--protocol", choices=["v1", "v2"], default="v1",
                    help="bench/forgetting's protocol whose runs to use (default v1)")
    ap.add_argument("--work", type=Path, help="bench/forgetting's scratch directory (shared, so runs are reused)")
    ap.add_argument("--results", type=Path)
    ap.add_argument("--parallel", type=int)
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--snapshot", metavar="REV", help="measure git revision REV (as bench/forgetting --snapshot)")
    args = ap.parse_args(argv)
    v2 = args.protocol == "v2" and not args.quick
    p, work = protocol_and_work(args)
    results_path = args.results or (work / "RIF_COST.md" if args.quick else HERE / "RESULTS.md")
    parallel = args.parallel or (2 if args.quick else 1)
    code = cb.use_code(args.snapshot, work)
    started = datetime.datetime.now(datetime.timezone.utc)
    machine = cb.machine()
    t0 = time.monotonic()
    bench = Bench(p, work, args.nice, parallel, RUNS_DIR[args.protocol])
    bench.prepare()
    seeds = p["seeds"]
    jobs = [bench.sequential(m, s) for s in seeds for m in ("grpo", "rif-grpo")]
    res = cb.run_all(jobs, parallel)
    runs = {(m, s): r for (s, m), r in zip([(s, m) for s in seeds for m in ("grpo", "rif-grpo")], res)}
    reused = sum(bool(r.get("reused")) for r in res)
    tasks = p["tasks"]
    pt = {k: per_task(r) for k, r in runs.items()}

    rows = []
    total_ratios = {"tokens": [], "steps": [], "seconds": []}
    for j, name in enumerate(tasks):
        g = [pt[("grpo", s)][j] for s in seeds]
        r = [pt[("rif-grpo", s)][j] for s in seeds]
        ratios = {k: [cb.ratio(a[k], b[k]) for a, b in zip(g, r)] for k in ("tokens", "steps", "seconds")}
        rows.append([name, cb.fmt_ms([x["filtered"] for x in r], 2),
                     cb.fmt_ms([x["tokens"] for x in g], 0), cb.fmt_ms([x["tokens"] for x in r], 0),
                     f"**{cb.fmt_ms(ratios['tokens'], 2)}**",
                     cb.fmt_ms([x["steps"] for x in g], 0), cb.fmt_ms([x["steps"] for x in r], 0),
                     f"**{cb.fmt_ms(ratios['steps'], 2)}**",
                     cb.fmt_ms([x["seconds"] for x in g], 1), cb.fmt_ms([x["seconds"] for x in r], 1),
                     f"**{cb.fmt_ms(ratios['seconds'], 2)}**"])
    for s in seeds:
        for k in total_ratios:
            total_ratios[k].append(cb.ratio(sum(x[k] for x in pt[("grpo", s)]), sum(x[k] for x in pt[("rif-grpo", s)])))
    rows.append(["all tasks", cb.fmt_ms([sum(x["filtered"] or 0 for x in pt[("rif-grpo", s)]) / len(tasks)
                                         for s in seeds], 2),
                 cb.fmt_ms([sum(x["tokens"] for x in pt[("grpo", s)]) for s in seeds], 0),
                 cb.fmt_ms([sum(x["tokens"] for x in pt[("rif-grpo", s)]) for s in seeds], 0),
                 f"**{cb.fmt_ms(total_ratios['tokens'], 2)}**",
                 cb.fmt_ms([sum(x["steps"] for x in pt[("grpo", s)]) for s in seeds], 0),
                 cb.fmt_ms([sum(x["steps"] for x in pt[("rif-grpo", s)]) for s in seeds], 0),
                 f"**{cb.fmt_ms(total_ratios['steps'], 2)}**",
                 cb.fmt_ms([sum(x["seconds"] for x in pt[("grpo", s)]) for s in seeds], 1),
                 cb.fmt_ms([sum(x["seconds"] for x in pt[("rif-grpo", s)]) for s in seeds], 1),
                 f"**{cb.fmt_ms(total_ratios['seconds'], 2)}**"])
    cost = cb.md_table(["task", "RIF filtered", "grpo tokens", "rif tokens", "tokens grpo/rif", "grpo steps",
                        "rif steps", "steps grpo/rif", "grpo s", "rif s", "s grpo/rif"], rows)
    aa = {m: [runs[(m, s)]["averageAccuracy"] for s in seeds] for m in ("grpo", "rif-grpo")}
    bwt = {m: [runs[(m, s)]["backwardTransfer"] for s in seeds] for m in ("grpo", "rif-grpo")}
    plast = {m: [runs[(m, s)]["plasticity"] for s in seeds] for m in ("grpo", "rif-grpo")}
    wall = {m: [runs[(m, s)]["wallSeconds"] for s in seeds] for m in ("grpo", "rif-grpo")}
    aa_diff = [b - a for a, b in zip(aa["grpo"], aa["rif-grpo"])]
    quality = cb.md_table(
        ["method", "final AA", "plasticity", "BWT", "whole `cpt run` wall s"],
        [[m, cb.fmt_ms(aa[m]), cb.fmt_ms(plast[m], signed=True), cb.fmt_ms(bwt[m], signed=True),
          cb.fmt_ms(wall[m], 0)] for m in ("grpo", "rif-grpo")]
        + [["rif-grpo - grpo (paired)", cb.fmt_ms(aa_diff, signed=True), "", "",
            "ratio grpo/rif " + cb.fmt_ms([cb.ratio(a, b) for a, b in zip(wall["grpo"], wall["rif-grpo"])], 2)]])
    mean = lambda xs: cb.mean_std(xs)[0]  # noqa: E731
    tok_r, step_r, sec_r, d_aa = (mean(total_ratios["tokens"]), mean(total_ratios["steps"]),
                                  mean(total_ratios["seconds"]), mean(aa_diff))
    cheap = all(cb.finite(x) and x >= GOAL_RATIO for x in (tok_r, step_r, sec_r))
    close = cb.finite(d_aa) and abs(d_aa) <= GOAL_AA
    not_worse = cb.finite(d_aa) and d_aa >= -GOAL_AA
    fmt = lambda x: "n/a " if x is None else f"{x:.2f}"  # noqa: E731
    verdict = (f"Goal: rif-grpo >= {GOAL_RATIO}x cheaper per task (tokens, steps, seconds) at AA within "
               f"{GOAL_AA:.2f}: cost ratios tokens {fmt(tok_r)}x, steps {fmt(step_r)}x, stage seconds "
               f"{fmt(sec_r)}x -> {'met' if cheap else 'NOT met'}; AA rif - grpo = "
               f"{'n/a' if d_aa is None else f'{d_aa:+.3f}'} -> within ±{GOAL_AA:.2f}: {'met' if close else 'NOT met'}, "
               f"not worse by more than {GOAL_AA:.2f}: {'met' if not_worse else 'NOT met'}.")
    elapsed = time.monotonic() - t0
    print("\n" + cost + "\n" + quality + "\n" + verdict)
    cmd = "OMP_NUM_THREADS=1 .venv/bin/python bench/rif_cost/run.py" + (" --quick" if args.quick else "") + (
        " --protocol v2" if v2 else "") + (
        f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds else "") + (
        f" --snapshot {args.snapshot}" if args.snapshot else "")
    doc = "\n".join([
        "# bench/rif_cost: rif-grpo vs grpo" + (" (QUICK smoke run)" if args.quick else ""),
        "",
        f"Command: `{cmd}`  ",
        f"Date: {started.strftime('%Y-%m-%d %H:%M UTC')}; {reused} of {len(res)} runs reused from bench/forgetting "
        f"(identical spec files in {work.name}/{bench.runs}), {elapsed / 60:.1f} min here  ",
        f"Machine: {machine}  ",
        f"Code measured: {code}",
        "",
        "Protocol: bench/forgetting's (see bench/forgetting/RESULTS.md), grpo and rif-grpo runs only:",
        "",
        describe(p),
        "",
        f"## Cost per task (mean ± std over seeds {', '.join(map(str, seeds))}; ratios paired per seed; "
        "> 1 means RIF is cheaper)",
        "",
        "Rollout tokens include RIF's filter rollouts; seconds = filter + train stage time measured inside the "
        "stage processes (process start-up and evaluation excluded; evaluation is the same work for both).",
        "",
        cost,
        "## Quality",
        "",
        quality,
        verdict,
        "",
    ])
    text = results_path.read_text() if results_path.is_file() and not args.quick else ""
    cut = text.find("\n" + V2_HEADING)
    if v2:
        # v2's section: same content, headings one level down, appended after v1's part (left unchanged)
        body = doc.split("\n", 1)[1].replace("\n## ", "\n### ")
        body = body.replace("Protocol: bench/forgetting's (see", "Protocol: bench/forgetting's v2 (see")
        doc = V2_HEADING + "\n\nrif-grpo vs grpo under bench/forgetting's protocol v2 (lr 1e-4 for SFT and " \
            "GRPO; registered after v1's results were seen, the only change from v1).\n" + body
        notes = HERE / "NOTES-v2.md"
        if notes.is_file():
            doc += "\n" + notes.read_text()
        doc = (text if cut < 0 else text[:cut]).rstrip("\n") + "\n\n" + doc
    else:
        notes = HERE / "NOTES.md"  # analysis written after reading the results; appended verbatim
        if notes.is_file() and not args.quick:
            doc += "\n" + notes.read_text()
        if cut >= 0:  # keep protocol v2's section when v1's part is regenerated
            doc = doc.rstrip("\n") + "\n\n" + text[cut + 1:]
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(doc)
    print(f"wrote {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
