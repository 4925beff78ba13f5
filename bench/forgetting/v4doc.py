"""RESULTS.md's protocol-v4 section (PROTOCOL-v4.md), written by the runner from the cached runs: the minimum
detectable effects, Part T's admission, matched reruns (with the level each reached beside L) and claims with both
interval kinds, Part M's arms and readings, Part G; "not run" for every part that has not run. Every figure is
recomputed here from the runs' per-prompt `correct` flags (eval.json), so a reader can recompute it too."""

from __future__ import annotations

import collections
import datetime
import statistics

import cptbench as cb
import stats as st
from protocols import V4_M, V4_REGISTERED
from sections import ci_text, f

REGISTERED_MDE = {9: 0.079, 18: 0.052, 49: 0.031}  # PROTOCOL-v4.md's table, SD 0.075 per pair


def acc(row: dict, name: str, idx=None) -> float:
    flags = row["correct"][name]
    return st.mean_at(flags, idx if idx is not None else range(len(flags)))


def header(data: dict, cmd: str) -> list[str]:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = "## Protocol v4: shared start (tiny model) and the SmolLM2 mechanism experiment"
    return [title + (" (QUICK smoke run)" if data.get("quick") else ""), "",
            f"Protocol: bench/forgetting/PROTOCOL-v4.md, registered in commit {V4_REGISTERED} (before any v4 run). "
            f"Code measured (the runs' own records, done.json): {measured(data)}.  ", f"Command: `{cmd}`  ", f"Written: {now} by the runner.  ",
            f"Machine: {data['machine']}", ""]


def measured(data: dict) -> str:
    """The code every run this section reads was measured with, from each run's done.json (`code`: code-<sha12>
    for a git snapshot, else "working tree"), with how many runs; not the report process's own code."""
    recs = list(data["T"].get("records", []))
    recs += [r for g in data["T"]["pairs"].values() for grp in g.values() for r in grp.records]
    if data["M"] is not None:
        recs += [r for g in data["M"]["seeds"].values() for r in g.records]
    runs = {r["dir"]: r.get("code", "not recorded") for r in recs}
    if not runs:
        return "no run finished yet"
    count = collections.Counter(runs.values())
    name = lambda c: f"git snapshot {c[5:]}" if c.startswith("code-") else c  # noqa: E731
    return ", ".join(f"{name(c)} ({n} run{'s' * (n != 1)})" for c, n in sorted(count.items()))


def probe_mde(m: dict) -> str:
    """Part M's pooled probe bound for the seeds run: each seed scores the same len(probes) x n_probe prompts."""
    n, seeds = len(m["probes"]) * m["n_probe"], len(m["seeds"])
    if seeds == 1:
        return f"{f(st.mde_binomial(n), 2)} ({n} prompts, one seed run)"
    return f"{f(st.mde_binomial(n * seeds), 2)} ({n * seeds} independent draws) to {f(st.mde_binomial(n), 2)} ({n})"


def mde_lines(sd: float, m: dict) -> list[str]:
    rows = [[n, f(REGISTERED_MDE[n]), f(st.mde(sd, n))] for n in sorted(REGISTERED_MDE)]
    return ["### Minimum detectable effect (computed before the runs)", "",
            f"Paired t-test, two-sided 5%, 80% power, SD {sd} per pair (v3's spread). The registered table and the "
            "exact noncentral-t figure of stats.mde (they differ by at most 0.001):", "",
            cb.md_table(["pairs", "registered", "exact"], rows),
            f"Part M's pooled probe: {probe_mde(m)}; per-prompt pairing makes it smaller.", ""]


def section(data: dict, cmd: str) -> str:
    out = mde_lines(data["T"]["protocol"]["sd_per_pair"], V4_M)
    out += part_t(data["T"])
    out += part_m(data["M"]) if data["M"] is not None else ["### Part M", "", "Not run (quick smoke run).", ""]
    out += ["### Part G (GPU)", "", "Not run: no device.", ""]
    return "\n".join(header(data, cmd) + out)  # the header last: it names the code of every run read above


# ------------------------------------------------------------------------------------------------ Part T

def t_change(group, m: dict, arm: str, kind: str, p: dict, task2: str):
    """An arm's change from the shared start at its matched point: task 1 (forgetting) or the probes' mean."""
    start, row = group.start_row(), m[arm]["row"]
    names = [p["task1"]] if kind == "forgetting" else p["probes"][task2]
    return statistics.fmean(acc(row, n) - acc(start, n) for n in names)


def part_t(t: dict) -> list[str]:
    p, pairs = t["protocol"], t["pairs"]
    out = ["### Part T: shared start on the tiny model", ""]
    if t.get("bases"):
        out += ["Bases as built for these runs (recipe hash, build seconds, build-time probe; PROTOCOL-v4.md's "
                "execution note on Part T's bases: v3's own bases were not kept and a rebuild is not bit-identical):",
                "", cb.md_table(["base", "recipe hash", "build s", "build-time probe"],
                                [[b, r["recipe_hash"], f(r["seconds"], 0), r["eval_accuracy"]]
                                 for b, r in sorted(t["bases"].items())])]
    if not pairs:
        return out + ["Not run yet: no shared task-1 checkpoint has finished.", ""]
    out += [f"(base, seed) pairs with a shared checkpoint: {len(pairs)} of {len(t['order'])}.", ""]
    for task2 in p["tasks2"]:
        out += t_task(task2, {pr: g[task2] for pr, g in pairs.items()}, p, len(t["order"]))
    return out


def t_task(task2: str, groups: dict, p: dict, needed: int) -> list[str]:
    adm_rows, rerun_rows, claim_rows = [], [], []
    for (b, s), g in groups.items():
        adm = g.admission()
        adm_rows.append([f"b{b} s{s}", f(adm["start"])] + [
            f"{f(e['final'])} ({f(e['gain'], 3, True)}){'' if e['admitted'] else ' not admitted'}"
            for e in adm["arms"].values()])
    for label, a, b, kind in p["claims"]:
        vals = {}
        for pr, g in groups.items():
            m = g.matched(a, b)
            rerun_rows.append([f"b{pr[0]} s{pr[1]}", label, m["status"], f(m.get("level"))] + [
                _reached(m.get(arm)) for arm in (a, b)])
            if m["status"] == "matched":
                vals[pr] = t_change(g, m, a, kind, p, task2) - t_change(g, m, b, kind, p, task2)
        t_ci, c_ci = st.t_interval(list(vals.values())), st.clustered_bootstrap(vals, p["reps"])
        what = "task 1 (" + p["task1"] + ")" if kind == "forgetting" else "the probes"
        claim_rows.append([f"{label}. change of {what}: {a} - {b}", t_ci["n"], ci_text(t_ci), ci_text(c_ci),
                           st.both_verdict(t_ci, c_ci, f"{a} loses more", f"{b} loses more", needed)])
    return [f"**Task 2 = {task2}** (probes {', '.join(p['probes'][task2])})", "",
            "Admission: dev accuracy of the shared start, then each arm's final dev (gain); the bar is +"
            f"{p['admission_gain']}.", "",
            cb.md_table(["pair", "start dev"] + p["arms"], adm_rows),
            "Matched reruns: L, then for each arm its matched step and the dev level it reached (`final` = the "
            "full run stopped there, no rerun).", "",
            cb.md_table(["pair", "claim", "status", "L", "arm A: step (reached)", "arm B: step (reached)"],
                        rerun_rows),
            f"Claims (d = change(A) - change(B) per pair; 95% t-interval over pairs; base-clustered bootstrap, "
            f"{p['reps']:,} draws; a verdict needs both on the same side of 0; with {needed} pairs a true "
            f"difference below ~{f(st.mde(p['sd_per_pair'], max(needed, 2)), 2)} is expected to come out not "
            "distinguishable):", "",
            cb.md_table(["claim", "n pairs", "t-interval", "base-clustered", "verdict"], claim_rows)]


def _reached(m) -> str:
    if not m:
        return "-"
    if "row" not in m:
        return f"step {m['step']}: {m.get('phase')}"
    return f"step {m['step']} ({f(m['reached'])}{'' if m['rerun'] else ', final'})"


# ------------------------------------------------------------------------------------------------ Part M

def part_m(m: dict) -> list[str]:
    out = ["### Part M: SmolLM2-135M-Instruct, add2, vLLM scoring every row", ""]
    if m["import"] is None:
        return out + ["Not run yet: the model has not been imported.", ""]
    p, groups = m["protocol"], m["seeds"]
    if p["seeds"] != p.get("registered_seeds", p["seeds"]):
        out += [f"Seeds run: {p['seeds']} of the registered {p['registered_seeds']}: the budget rule dropped the rest "
                "before any arm ran (PROTOCOL-v4.md, execution note on Part M's budget rule).", ""]
    if not any(r for g in groups.values() for r in g.full.values()):
        return out + ["Not run yet: no arm has finished.", ""]
    rows, matched = [], {}
    for seed, g in groups.items():
        adm = g.admission()
        ok = [a for a, e in adm["arms"].items() if e["admitted"]]
        level = min((adm["arms"][a]["final"] for a in ok), default=None)
        if level is not None and adm["start"] is not None and level < adm["start"] + p["match_margin"] - 1e-12:
            level = None
        for a, e in adm["arms"].items():
            at = g.at_level(a, level) if level is not None and a in ok else None
            rows.append([seed, a, f(adm["start"]), f(e["final"]), f(e["gain"], 3, True),
                         "yes" if e["admitted"] else "no", f(level), _reached(at)])
            if at and "row" in at:
                matched.setdefault(a, {})[seed] = (g.start_row(), at["row"])
    gaps = [f"s{seed} {a}" for seed, g in groups.items() for a, r in g.full.items()
            if r and r.get("phase") == "Succeeded" and not r.get("curve_complete", True)]
    out += [f"Dev curves (PROTOCOL-v4.md Amendment 1): each full run's step checkpoints, every {p['every']} steps, "
            f"scored on the dev set by {p['engine']} after the run; the last point is the run's final row (the same "
            "engine). " + (f"Curve incomplete (not kept or not scored yet), no matched point read: {', '.join(gaps)}."
                           if gaps else "Every finished run's curve is complete."), "",
            cb.md_table(["seed", "arm", "base dev", "final dev", "gain", "admitted", "L", "matched step (reached)"],
                        rows)]
    return out + m_claims(matched, p)


def m_claims(matched: dict, p: dict) -> list[str]:
    ref, rows, loses = p["reference"], [], {}
    for arm in [a for a in p["arms"] if a != ref]:
        seeds = sorted(set(matched.get(arm, {})) & set(matched.get(ref, {})))
        if not seeds:
            rows.append([f"{arm} - {ref}", "n/a", "not decided: admission or matching failed, or not run"])
            continue
        ci = m_bootstrap(matched, arm, ref, seeds, p["probes"], p["reps"])
        verdict = "not distinguishable" if ci["lo"] <= 0 <= ci["hi"] else (
            f"{arm} loses more" if ci["hi"] < 0 else f"{ref} loses more")
        loses[arm] = ci["hi"] < 0
        extra = "; ".join(f"{x} {f(m_bootstrap(matched, arm, ref, seeds, [x], p['reps'])['mean'], 3, True)}"
                          for x in p["extra_probes"])
        rows.append([f"{arm} - {ref} (seeds {seeds}; {extra})", ci_text(ci), verdict])
    return ["Pooled probe change (mean of " + ", ".join(p["probes"]) + ") at equal task gain, X minus "
            f"{ref}; per-prompt paired bootstrap over seeds, {p['reps']:,} draws (mul and capitals: point "
            "differences, beside):", "", cb.md_table(["comparison", "d [95% CI]", "verdict"], rows),
            f"Registered reading: {reading(loses)}", ""]


def m_bootstrap(matched: dict, a: str, b: str, seeds: list, probes: list, reps: int) -> dict:
    """Probe change of a minus b at the matched points, pooled over seeds (the same prompt indices for both arms
    and every seed: the probe sets are the same across seeds)."""
    def stat(idx):
        return statistics.fmean(
            (acc(matched[a][s][1], n, idx[n]) - acc(matched[a][s][0], n, idx[n]))
            - (acc(matched[b][s][1], n, idx[n]) - acc(matched[b][s][0], n, idx[n])) for s in seeds for n in probes)
    first = matched[a][seeds[0]][1]
    return st.bootstrap(stat, {n: len(first["correct"][n]) for n in probes}, reps=reps)


def reading(loses: dict) -> str:
    """PROTOCOL-v4.md Part M's readings, registered in advance."""
    sft = ("sft-answer", "sft-format", "self-sft")
    if any(a not in loses for a in sft):
        return "not decided: an SFT-family comparison is missing."
    hit = {a for a in sft if loses[a]}
    if hit == {"sft-answer"}:
        return "only sft-answer loses more: the pilot's SFT finding was a format artefact."
    if hit == {"sft-answer", "sft-format"}:
        return "sft-answer and sft-format lose more, self-sft does not: off-policy data drives it."
    if hit == set(sft):
        return "all three SFT-family arms lose more: the SFT objective itself drives it."
    return f"pattern {sorted(hit) or 'none'} lose more: reported as it is, with no reading."
