"""RESULTS.md's section of protocol v3 Part A, written by the runner from the cached runs (no number is typed by
hand); the header shared with the pilot's section (v3pilotdoc.py). sections.py puts it between its markers."""

from __future__ import annotations

import datetime
import statistics

import cptbench as cb
import stats as st
from sections import ci_text, f

REGISTERED = "ebeaab5"  # the commit that registered PROTOCOL-v3.md


def header(data: dict, cmd: str) -> list[str]:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [f"Protocol: bench/forgetting/PROTOCOL-v3.md, registered in commit {REGISTERED} (before any v3 or pilot "
            f"run); execution note and amendments in the commit measured. Code measured: {data['code']}.  ",
            f"Command: `{cmd}`  ", f"Written: {now} by the runner.  ", f"Machine: {data['machine']}", ""]


# ------------------------------------------------------------------------------------------------ Part A

def pair_complete(pair: dict, seqs: dict) -> bool:
    if not any(seqs.values()):
        return False
    for kind, seq in seqs.items():
        if not seq:
            continue
        part = pair.get(kind)
        if not part or any(v is None for v in part["full"].values()):
            return False
        for m in part["matched"].values():
            if m is not None and any(v is None for k, v in m.items() if k != "steps"):
                return False
    return True


def v3_section(data: dict, cmd: str) -> str:
    from protocols import BASE_SEEDS, PAIR_ORDER, V3

    out = ["## Protocol v3 (tiny char model): SFT vs GRPO vs RIF-GRPO vs GRPO at the paper's lr vs self-SFT", ""]
    out += header(data, cmd)
    out += ["### Bases", ""]
    rows = []
    for b in BASE_SEEDS:
        rep = data["bases"].get(b)
        ev = data["base_evals"].get(b)
        if rep is None:
            rows.append([b, "not built yet", "", "", "", ""])
            continue
        rows.append([b, rep["recipe_hash"], rep.get("built_on"), rep["seconds"], rep["eval_accuracy"],
                     ev if ev else "not evaluated yet"])
    out.append(cb.md_table(["base seed", "recipe hash", "built on", "build s", "build-time probe (200 prompts)",
                            "greedy accuracy on run seed 0's 500-prompt eval sets"], rows))
    adm = data["admission"]
    out += ["### Admission (base 0, run seed 0, each candidate alone, full budget, 500-prompt eval sets)", "",
            "Rule: base accuracy <= 0.80 and, for sft and for grpo, a - c >= 0.10 and the Wilson 95% lower bound of "
            "a above c (c = the best constant answer's accuracy).", ""]
    rows = [[s, f(e["base"]), f(e["c"]), f"{f(e['sft'])} ({f(e['sft_wilson'])})",
             f"{f(e['grpo'])} ({f(e['grpo_wilson'])})", "**yes**" if e["admitted"] else "no"]
            for s, e in adm["table"].items()]
    out.append(cb.md_table(["candidate", "base", "c", "sft a (Wilson lower)", "grpo a (Wilson lower)", "admitted"],
                           rows) if rows else "No admission run has finished yet.\n")
    if not adm["complete"]:
        out += ["Admission is not complete: no sequence is chosen yet.", ""]
        return "\n".join(out)
    seqs = data["sequences"]
    none = "**none admitted** (v3 runs without it)"
    shown = {k: " -> ".join(seqs[k]) if seqs.get(k) else none for k in ("interfering", "unrelated")}
    out += [f"Admitted: {', '.join(adm['admitted']) or 'none'}. Sequences: interfering {shown['interfering']}; "
            f"unrelated {shown['unrelated']}.", ""]
    probes = data["probes"]
    if probes is None:
        out += ["Off-ceiling probes: not chosen yet (every base must be built and evaluated first).", ""]
        return "\n".join(out)
    out += [f"Off-ceiling probes (candidates in neither sequence, base accuracy in [0.20, 0.90] on all three bases): "
            f"{', '.join(probes) if probes else '**none**: the general-skill claim is not decided'}; `copy` is the "
            "ceiling probe, reported separately.", ""]
    pairs = data["pairs"]
    done = [pr for pr in PAIR_ORDER if pr in pairs and pair_complete(pairs[pr], seqs)]
    out += [f"**(base, seed) pairs completed: {len(done)} of 9** "
            f"({', '.join(f'(b{b},s{s})' for b, s in done) or 'none yet'}); a pair counts when its five arms and "
            "its matched reruns have finished. Differences below use every pair where both runs of the comparison "
            "finished (n in each row).", ""]
    for kind, seq in seqs.items():
        if not seq:
            continue
        out += v3_claims(kind, seq, pairs, probes, V3)
    out += ["### Per-run figures", ""]
    for kind, seq in seqs.items():
        if seq:
            out += v3_runs(kind, seq, pairs, probes)
    return "\n".join(out)


def _per_pair(pairs: dict, kind: str, fn) -> dict:
    vals = {}
    for pr, pair in pairs.items():
        part = pair.get(kind)
        if part:
            v = fn(part)
            if v is not None:
                vals[pr] = v
    return vals


def _claim_row(label: str, vals: dict, below: str, above: str, ref: float = 0.0) -> list:
    """ref: the value the interval is read against (0 for differences, 1 for ratios)."""
    ci = st.t_interval(list(vals.values()))
    per_base = []
    for b in (0, 1, 2):
        vb = [v for (bb, _), v in vals.items() if bb == b]
        per_base.append(f(statistics.fmean(vb), 3, True) if vb else "-")
    shifted = dict(ci, **{k: ci[k] - ref for k in ("lo", "hi") if ci[k] is not None})
    ver = st.verdict(shifted, below, above)
    if ci["n"] < st.PAIRS_REGISTERED and ci["n"] >= 2:
        ver += " (interim interval shown)"
    return [label, ci["n"], ci_text(ci, signed=not ref), " / ".join(per_base), ver]


def v3_claims(kind: str, seq: list, pairs: dict, probes: list, p: dict) -> list[str]:
    out = [f"### Claims, {kind} sequence {' -> '.join(seq)}", "",
           "d per (base, seed) pair; mean with its 95% t-interval (n - 1 degrees of freedom); per-base means "
           "b0 / b1 / b2. The verdict rules apply to the nine registered pairs only.", ""]
    rows = []

    def matched_metric(a, b, key):
        def fn(part):
            m = part["matched"].get((a, b))
            if not m:
                return None
            ma, mb = st.matched_metrics(m.get(a), seq, probes), st.matched_metrics(m.get(b), seq, probes)
            if ma is None or mb is None or ma[key] is None or mb[key] is None:
                return None
            return ma[key] - mb[key]
        return fn

    def full_metric(a, b, key, ratio=False):
        def fn(part):
            ma = st.full_metrics(part["full"].get(a), probes, p["ceiling_probe"])
            mb = st.full_metrics(part["full"].get(b), probes, p["ceiling_probe"])
            if ma is None or mb is None or ma[key] is None or mb[key] is None:
                return None
            if ratio:
                return ma[key] / mb[key] if mb[key] else None
            return ma[key] - mb[key]
        return fn

    for a, b in p["comparisons"]:
        rows.append(_claim_row(f"1. BWT({a}) - BWT({b}), matched", _per_pair(pairs, kind, matched_metric(a, b, "bwt")),
                               f"{a} forgets more", f"{b} forgets more"))
    for a, b in p["comparisons"]:
        rows.append(_claim_row(f"1 (secondary). BWT({a}) - BWT({b}), full budget",
                               _per_pair(pairs, kind, full_metric(a, b, "bwt")),
                               f"{a} forgets more", f"{b} forgets more"))
    if probes:
        rows.append(_claim_row("2. probe change(sft) - probe change(grpo), matched",
                               _per_pair(pairs, kind, matched_metric("sft", "grpo", "general")),
                               "sft loses more general skill", "grpo loses more general skill"))
        rows.append(_claim_row("2 (secondary). probe change(sft) - probe change(grpo), full budget",
                               _per_pair(pairs, kind, full_metric("sft", "grpo", "general")),
                               "sft loses more general skill", "grpo loses more general skill"))
    else:
        rows.append(["2. general skill", 0, "n/a", "-", "not decided: no off-ceiling probe"])
    rows.append(_claim_row("ceiling probe copy: change(sft) - change(grpo), full budget",
                           _per_pair(pairs, kind, full_metric("sft", "grpo", "ceiling")),
                           "sft loses more copy", "grpo loses more copy"))
    rows.append(_claim_row("3. rollout tokens rif-grpo / grpo (ratio)",
                           _per_pair(pairs, kind, full_metric("rif-grpo", "grpo", "tokens", ratio=True)),
                           "rif-grpo spends fewer rollout tokens", "rif-grpo spends more rollout tokens", ref=1.0))
    rows.append(_claim_row("3. learner steps rif-grpo / grpo (ratio)",
                           _per_pair(pairs, kind, full_metric("rif-grpo", "grpo", "steps", ratio=True)),
                           "rif-grpo takes fewer learner steps", "rif-grpo takes more learner steps", ref=1.0))
    rows.append(_claim_row("3. final AA(rif-grpo) - AA(grpo)",
                           _per_pair(pairs, kind, full_metric("rif-grpo", "grpo", "aa")),
                           "rif-grpo ends lower", "rif-grpo ends higher"))
    table = cb.md_table(["claim", "n pairs", "mean d [95% CI]", "per base", "verdict"], rows)
    out += [table, "Claim 3's ratios are read against 1 (below 1 = rif-grpo spends less), shown as mean ratio "
            "[95% CI].", ""]
    return out


def v3_runs(kind: str, seq: list, pairs: dict, probes: list) -> list[str]:
    from protocols import PAIR_ORDER, V3

    rows = []
    for pr in PAIR_ORDER:
        part = pairs.get(pr, {}).get(kind)
        if not part:
            continue
        for arm, run in part["full"].items():
            m = st.full_metrics(run, probes, V3["ceiling_probe"])
            if run is None:
                continue
            if m is None:
                rows.append([f"b{pr[0]} s{pr[1]}", arm, run.get("phase"), "", "", "", "", "", "", "", ""])
                continue
            rows.append([f"b{pr[0]} s{pr[1]}", arm, "full", f(m["aa"]), f(m["plasticity"], 3, True),
                         f(m["bwt"], 3, True), f(m["general"], 3, True), f(m["ceiling"], 3, True),
                         m["tokens"], m["steps"], f(m["wall"], 0)])
        for (a, b), mm in part["matched"].items():
            if mm is None:
                rows.append([f"b{pr[0]} s{pr[1]}", f"{a} vs {b}", "no matched sequence (a run trained nothing)",
                             "", "", "", "", "", "", "", ""])
                continue
            for arm in (a, b):
                m = st.matched_metrics(mm.get(arm), seq, probes)
                if m is None:
                    continue
                rows.append([f"b{pr[0]} s{pr[1]}", arm, f"matched vs {b if arm == a else a}: steps {mm['steps'][arm]}",
                             f(m["aa"]), "", f(m["bwt"], 3, True), f(m["general"], 3, True), "",
                             "", sum(m["steps"]), ""])
    if not rows:
        return [f"{kind}: no run finished yet.", ""]
    return [f"**{kind} sequence {' -> '.join(seq)}**", "",
            cb.md_table(["pair", "arm", "run", "final AA", "plasticity", "BWT", "probe change", "copy change",
                         "rollout tokens", "learner steps", "wall s"], rows)]
