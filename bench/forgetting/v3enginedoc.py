"""RESULTS.md's engine-check part of the pilot section (PROTOCOL-v3.md addendum of 2026-11-30): the same weights
scored by two engines, per set and per row, and every pilot claim again with all rows scored by hf. Reads what
v3engines.collect gathered; runs nothing."""

from __future__ import annotations

import cptbench as cb
import stats as st
from v3pilotclaims import pilot_claims

def set_table(pairs: list[dict]) -> list[list]:
    """Per eval set, pooled over every (weights, set) scored by both engines."""
    agg: dict[str, dict] = {}
    for pr in pairs:
        for name, hf in pr["hf"]["correct"].items():
            vl = pr["vllm"]["correct"][name]
            a = agg.setdefault(name, {"rows": 0, "n": 0, "hf": 0, "vllm": 0, "differ": 0, "max": 0.0})
            a["rows"] += 1
            a["n"] += len(hf)
            a["hf"] += hf.count("1")
            a["vllm"] += vl.count("1")
            a["differ"] += sum(x != y for x, y in zip(hf, vl))
            a["max"] = max(a["max"], abs(vl.count("1") - hf.count("1")) / len(hf))
    order = sorted(agg, key=lambda k: (k.startswith("dev-"), k))
    return [[k, agg[k]["rows"], agg[k]["n"], f"{agg[k]['hf'] / agg[k]['n']:.3f}", f"{agg[k]['vllm'] / agg[k]['n']:.3f}",
             f"{(agg[k]['vllm'] - agg[k]['hf']) / agg[k]['n']:+.3f}", f"{agg[k]['max']:.3f}",
             f"{agg[k]['differ'] / agg[k]['n']:.3f} ({agg[k]['differ']})"] for k in order]


def row_table(pairs: list[dict]) -> list[list]:
    rows = []
    for pr in pairs:
        cells = [f"{k} {pr['hf']['correct'][k].count('1')}/{pr['vllm']['correct'][k].count('1')}"
                 f" ({sum(x != y for x, y in zip(pr['hf']['correct'][k], pr['vllm']['correct'][k]))})"
                 for k in pr["hf"]["correct"]]
        rows.append([f"{pr['group']} {pr['run']}", pr["row"], "hf (cached)" if pr["row"] == 0 else "vllm (cached)",
                     "; ".join(cells)])
    return rows


def admission_lines(data: dict, ec: dict) -> list[str]:
    """The admission rule again with the grpo runs' rows scored by hf (their sft rows and base rows were hf)."""
    rows = []
    for task, e in data["admission"]["table"].items():
        hf = ec["admission"].get(task, {}).get("grpo")
        if hf is None or e.get("grpo") is None:
            continue
        again = st.admitted(e["base"], [e["sft"], hf], e["c"], e["n"], **data["protocol"]["admission"])
        rows.append([task, f"{e['grpo']:.3f}", f"{hf:.3f} ({st.wilson_lower(hf, e['n']):.3f})",
                     "yes" if e["admitted"] else "no", "yes" if again else "no",
                     "same" if again == e["admitted"] else "**changes**"])
    if not rows:
        return []
    return ["Admission with the grpo runs' rows scored by hf (the base and sft rows were hf already):", "",
            cb.md_table(["candidate", "grpo a, vLLM (pilot)", "grpo a, hf (Wilson lower)", "admitted (pilot)",
                         "admitted, all hf", "verdict"], rows)]


def section(data: dict) -> list[str]:
    """The pilot section's engine check, from the cache only."""
    ec = data.get("engine_check")
    out = ["### Engine check (post hoc, PROTOCOL-v3.md addendum of 2026-11-30)", "",
           "`cpt run` scored the rows of grpo, rif-grpo, self-sft and their matched reruns after training with "
           "vLLM, the base row and every SFT row with hf, so each difference above between an SFT row and a "
           "GRPO-family row, and each change from the base row of a GRPO-family arm, compares two engines. This "
           "check re-scores with hf every row vLLM scored (the same checkpoint, verified against its manifest; the "
           "same eval sets, 32 tokens, greedy) and the base row once with vLLM, through the product's evaluation at "
           "the pilot's code snapshot (bench/forgetting/v3engine_score.py), and recomputes every claim with all "
           "rows scored by hf.", ""]
    if not ec or not ec["jobs"] or not ec["pairs"]:
        return out + ["**The engine check has not run** (`run.py --protocol pilot --phase engine-check`): the "
                      "verdicts above compare rows scored by two engines, and nothing here says how much that "
                      "matters.", ""]
    pairs = ec["pairs"]
    if len(pairs) < ec["jobs"]:
        out += [f"**Not complete: {len(pairs)} of {ec['jobs']} scores done**; the figures below cover those; the "
                "hf-only verdicts wait for all of them.", ""]
    if pairs:
        out += ["Same weights, two engines, per eval set (pooled over every row scored by both; accuracy hf vs "
                "vLLM, difference vLLM - hf, the largest per-row absolute difference, and the fraction of prompts "
                "whose correctness differs between the engines):", "",
                cb.md_table(["set", "rows", "prompts", "acc hf", "acc vLLM", "vLLM - hf", "largest row difference",
                             "prompts that differ"], set_table(pairs)),
                "<details><summary>Per row: correct with hf / with vLLM (prompts that differ)</summary>", "",
                cb.md_table(["run", "row", "engine of the pilot's row", "per set"], row_table(pairs)),
                "</details>", ""]
    rep = ec.get("reproduced") or {}
    if rep.get("prompts"):
        out += [f"Check of the re-scoring itself: each matched sequence's second run starts from its first run's "
                f"checkpoint and the pilot scored that checkpoint with hf (the second run's row 0); the hf re-scores "
                f"agree with those rows on {rep['same']} of {rep['prompts']} prompts.", ""]
    out += admission_lines(data, ec)
    if ec["hf_arms"] is None:
        return out
    changed = []
    for seed, part in sorted(data["arms"].items()):
        mixed = pilot_claims(part, data["sequence"], data["protocol"])
        hf = pilot_claims(ec["hf_arms"][seed], data["sequence"], data["protocol"])
        rows = []
        for m, h in zip(mixed, hf):
            same = m[2] == h[2]
            if not same:
                changed.append(f"seed {seed}: {m[0]} ({m[2]} -> {h[2]})")
            rows.append([m[0], m[1], m[2], h[1], h[2], "same" if same else "**changes**"])
        out += [f"Seed {seed}: every claim with the pilot's rows (mixed engines) and with every row scored by hf "
                "(same statistics: per-prompt paired bootstrap, 2,000 replicates, the pilot's 0.15 rule):", "",
                cb.md_table(["claim", "mixed engines: d [95% CI]", "verdict", "all hf: d [95% CI]", "verdict",
                             "verdict"], rows)]
    out += [("**No pilot verdict changes when every row is scored by hf.**" if not changed else
             "**Verdicts that change when every row is scored by hf:** " + "; ".join(changed) + "."), ""]
    return out
