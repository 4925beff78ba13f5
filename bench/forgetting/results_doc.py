"""RESULTS.md's sections of protocols v1 and v2: protocol text, the comparison table, per-seed matrices (sections.py
puts them in the file)."""

from __future__ import annotations

from pathlib import Path

import cptbench as cb

HERE = Path(__file__).resolve().parent

METHODS = ["sft", "sft-matched", "grpo", "rif-grpo", "multitask"]
from sections import V2_HEADING


def describe(p: dict) -> str:
    g, s, r = p["grpo"], p["sft"], p["rif"]
    budget = (f"maxSteps {g['maxSteps']}" if g.get("maxSteps") else
              f"{g['epochs']} epochs x {p['n_train']} prompts / {g['promptsPerStep']} per step = "
              f"{g['epochs'] * p['n_train'] // g['promptsPerStep']} optimizer steps per task")
    return "\n".join([
        f"- Base: one tiny char-level Llama ({p.get('base_report', {}).get('params', '?')} parameters), "
        + (f"`cpt-trainer build-base --seed {p['base']['seed']}" + (f" --steps {p['base']['steps']}`"
           if p['base']['steps'] else "` (the default recipe)") if not p['base'].get('overrides') else
           f"BaseModelConfig(steps={p['base']['steps']}, {p['base']['overrides']}) (smoke run)")
        + ", shared by all seeds (a seed changes the drawn pools, eval sets and all sampling/shuffling seeds, "
        f"not the base). The base's greedy accuracy per skill: {p.get('base_report', {}).get('eval_accuracy')}.",
        f"- Tasks in order: {' -> '.join(p['tasks'])} (rule: the tasks build-base's recipe leaves partly solved, "
        f"BaseModelConfig.targets); general benchmark: {', '.join(p['general'])}. "
        f"{p['n_train']} fresh training prompts per task (`train` pool, disjoint from pre-training), "
        f"{p['n_eval']} eval prompts per task and benchmark (`eval` pool), greedy evaluation, "
        f"{p['evaluation']['maxCompletionTokens']} completion tokens.",
        f"- GRPO / RIF-GRPO: lr {g['learningRate']}, groupSize {g['groupSize']}, promptsPerStep "
        f"{g['promptsPerStep']}, klCoef {g['klCoef']}, temperature {g['temperature']}, "
        f"maxCompletionTokens {g['maxCompletionTokens']}; budget: {budget}. RIF: {r['rollouts']} rollouts, "
        f"minCorrect {r['minCorrect']}, same epochs over the kept prompts (fewer steps when it drops some).",
        f"- SFT: lr {s['learningRate']}, batch {s['batchSize']}, "
        + (f"maxSteps {s['maxSteps']}" if s.get("maxSteps") else f"{s['epochs']} epochs (same steps as GRPO)")
        + ".",
        f"- Matched-learning SFT control (`sft-matched`): on seed {p['seeds'][0]} only, SFT with maxSteps per task "
        f"from the fixed schedule {p['control_schedule']} in increasing order; the smallest budget whose "
        "plasticity reaches GRPO's plasticity on that seed is chosen (the full SFT budget if none does) and run "
        "on every seed.",
        f"- Multi-task baseline: `cpt-trainer multitask` with method {p['multitask_method']} on the union of the "
        "pools, same hyper-parameters and epochs (same total optimizer steps as the sequence), evaluated once; "
        "BWT/forgetting do not apply; plasticity and general change are against the same seed's base row.",
        f"- Seeds {p['seeds']}; mean ± sample std over seeds. Runs execute one at a time under `nice -n 10`, "
        "OMP_NUM_THREADS=1.",
    ])


# ------------------------------------------------------------------------------------------------ runs


def run_header(out: dict, cmd: str, started, elapsed: float, machine: str, code: str) -> list[str]:
    """The command / date / machine / code lines that head every results section."""
    return [
        f"Command: `{cmd}`  ",
        f"Date: {started.strftime('%Y-%m-%d %H:%M UTC')}; sum of the runs' wall times "
        f"{sum_wall(out) / 60:.1f} min (base build excluded), this invocation {elapsed / 60:.1f} min  ",
        f"Machine: {machine}  ",
        f"Code measured: {code}",
    ]


def render(summary: dict, p: dict) -> str:
    per, r, ctl = summary["per"], summary["ratios"], summary["control"]
    seeds = p["seeds"]
    label = {"sft": "sft", "grpo": "grpo", "rif-grpo": "rif-grpo", "multitask": f"multitask ({p['multitask_method']})",
             "sft-matched": "sft-matched (" + (f"{ctl['chosen']} steps/task" if ctl["chosen"] else "= full sft")
             + ")"}
    rows = []
    for m in METHODS:
        vals = lambda k: [per[m][s][k] for s in seeds if s in per[m]]  # noqa: E731
        rows.append([label[m], cb.fmt_ms(vals("aa")), cb.fmt_ms(vals("plasticity"), signed=True),
                     cb.fmt_ms(vals("bwt"), signed=True), cb.fmt_ms(vals("forgetting"), signed=True),
                     cb.fmt_ms(vals("general"), signed=True), cb.fmt_ms(vals("filtered"), 2),
                     cb.fmt_ms(vals("tokens"), 0), cb.fmt_ms(vals("steps"), 0), cb.fmt_ms(vals("wall"), 0)])
    table = cb.md_table(["method", "final AA", "plasticity", "BWT", "forgetting", "general change",
                         "RIF filtered", "rollout tokens", "learner steps", "wall s"], rows)

    def f(x, d=2):
        return "n/a" if x is None else f"{x:.{d}f}"

    lines = [
        table,
        f"- |BWT_sft| / |BWT_grpo| = **{f(r['bwt_sft_over_grpo'])}** (ratio of the seed means; per seed: "
        f"{cb.fmt_ms(r['bwt_sft_over_grpo_per_seed'], 2)})",
        f"- |BWT_sft-matched| / |BWT_grpo| = **{f(r['bwt_matched_over_grpo'])}** (per seed: "
        f"{cb.fmt_ms(r['bwt_matched_over_grpo_per_seed'], 2)})",
        f"- general change sft / grpo = {f(r['general_sft_over_grpo'])}",
        f"- rif-grpo vs grpo cost (grpo / rif-grpo, paired per seed, > 1 means RIF is cheaper): rollout tokens "
        f"**{cb.fmt_ms(r['cost_tokens_grpo_over_rif'], 2)}**, learner steps "
        f"**{cb.fmt_ms(r['cost_steps_grpo_over_rif'], 2)}**, wall time **{cb.fmt_ms(r['cost_wall_grpo_over_rif'], 2)}**"
        f"; AA rif-grpo - grpo = {cb.fmt_ms(r['aa_rif_minus_grpo'], 3, signed=True)}",
        f"- matched-learning control scan (seed {seeds[0]}, target = GRPO plasticity {f(ctl['target_plasticity'], 3)}): "
        + (", ".join(f"{s['maxSteps']} steps -> plasticity {f(s['plasticity'], 3)} (BWT {f(s['bwt'], 3)})"
                     for s in ctl["scan"]) or "none")
        + (f"; chosen: {ctl['chosen']} steps/task" if ctl["chosen"] else "; none reached it: control = full sft"),
    ]
    return "\n".join(lines) + "\n"


def render_matrices(out: dict, p: dict) -> str:
    """Per-seed accuracy matrices (appendix of RESULTS.md)."""
    parts = []
    for m in ("sft", "sft-matched", "grpo", "rif-grpo"):
        for s, res in sorted(out["results"][m].items()):
            if "matrix" not in res:
                continue
            rows = [[lab] + [cb.finite(v) and f"{v:.2f}" or "-" for v in row] + [f"{g[0]:.2f}" if g else "-"]
                    for lab, row, g in zip(["base"] + res["tasks"], res["matrix"], res["general"] or [[]] * 9)]
            parts.append(f"**{m}, seed {s}** (steps per task: "
                         f"{[t['learnerSteps'] for t in res['perTask'][1:]]}, filtered: "
                         f"{[t['filteredFraction'] for t in res['perTask'][1:]]})\n\n"
                         + cb.md_table(["after \\ on"] + res["tasks"] + ["general " + ",".join(res["benchmarks"])],
                                       rows))
    for s, res in sorted(out["results"]["multitask"].items()):
        parts.append(f"**multitask, seed {s}**: tasks {res['eval']['tasks']}, general {res['eval']['general']}, "
                     f"steps {res['train'].get('steps')}\n")
    return "\n".join(parts)


def sum_wall(out: dict) -> float:
    """Wall time of every distinct run (the control scan's runs included), as first measured."""
    seen = {}
    for method in out["results"].values():
        for res in method.values():
            seen[id(res)] = res["wallSeconds"]
    for scan in out["control"].get("scan_runs", []):
        seen[id(scan)] = scan["wallSeconds"]
    return sum(seen.values())


COLUMNS = (
    "Columns: final AA = mean accuracy over all tasks after the last task; plasticity = mean over tasks of "
    "a[j][j] - a[0][j]; BWT = mean over j < T of a[T][j] - a[j][j] (negative = forgetting); forgetting = "
    "Chaudhry (positive = forgetting); general change = general score after the last task minus the base's; "
    "RIF filtered = mean fraction of training prompts dropped; rollout tokens include RIF's filter rollouts; "
    "wall s = the whole `cpt run` (all stages, process start-up and evaluation included).")


def v2_section(p, out, table, cmd, started, elapsed, machine, code) -> str:
    """Protocol v2's section of RESULTS.md (appended after v1's part, which is left unchanged)."""
    parts = [
        V2_HEADING,
        "",
        "**Registered after seeing v1's results** (in bench/forgetting/run.py, `--protocol v2`, committed before "
        "any v2 run). Why: at v1's lr 5e-4 GRPO collapsed on this base (plasticity -0.07, general skill copy "
        "1.00 -> 0.01), so v1 says little about SFT vs GRPO at equal learning; the trainer's author measured that "
        "lr 3e-4 already over-trains this base and recommends 1e-4 (examples/local.yaml). **The only change from "
        "v1 is the learning rate, 1e-4 for SFT and for GRPO / RIF-GRPO / multi-task GRPO alike**; the base (v1's "
        "build, reused), tasks, pools, eval sets, budgets (16 epochs), seeds, RIF settings, matched-learning "
        "control rule and multi-task baseline are v1's.",
        "",
        "### v2 protocol",
        "",
        describe(p),
        "",
        *run_header(out, cmd, started, elapsed, machine, code),
        "",
        "### v2 results (mean ± std over seeds " + ", ".join(map(str, p["seeds"])) + ")",
        "",
        COLUMNS,
        "",
        table,
        "### v2 per-seed accuracy matrices",
        "",
        render_matrices(out, p),
    ]
    doc = "\n".join(parts)
    notes = HERE / "NOTES-v2.md"  # v2 analysis written after reading v2's results; appended verbatim
    if notes.is_file():
        doc += "\n" + notes.read_text()
    return doc
