"""The pilot's claims (PROTOCOL-v3.md Part B) from its runs' per-prompt flags, with per-prompt paired bootstrap
intervals: one function, used by the pilot's section and again by the engine check on the hf re-scored rows."""

from __future__ import annotations

import statistics

import cptbench as cb
import stats as st
from sections import ci_text, f


def pilot_claims(part: dict, seq: list, p: dict) -> list[list]:
    """One seed's claim rows [claim, d [95% CI], verdict] from its runs' per-prompt flags (eval.json `correct`);
    v3engines.py calls it again on the same runs with every row re-scored by hf."""
    probes = p["probes"]
    claims = []

    def flags(run, row, name):
        return run["evals"][row]["correct"][name]

    t1, t2 = seq
    for (a, b), mm in part["matched"].items():
        if mm is None:
            claims.append([f"1. BWT({a}) - BWT({b}), matched", "n/a", "no matched sequence (a run trained nothing)"])
            continue
        ra, rb = mm.get(a), mm.get(b)
        if not (ra and rb and "second" in ra and "second" in rb):
            claims.append([f"1. BWT({a}) - BWT({b}), matched (steps {mm['steps']})", "n/a",
                           "not decided: reruns not run yet"])
            continue
        fa11, fa21 = flags(ra["first"], 1, t1), flags(ra["second"], -1, t1)
        fb11, fb21 = flags(rb["first"], 1, t1), flags(rb["second"], -1, t1)
        stat = lambda idx, fa11=fa11, fa21=fa21, fb11=fb11, fb21=fb21: (  # noqa: E731
            (st.mean_at(fa21, idx[t1]) - st.mean_at(fa11, idx[t1]))
            - (st.mean_at(fb21, idx[t1]) - st.mean_at(fb11, idx[t1])))
        ci = st.bootstrap(stat, {t1: len(fa11)})
        claims.append([f"1. BWT({a}) - BWT({b}), matched (steps {mm['steps']})", ci_text(ci),
                       st.pilot_verdict(ci, f"{a} forgets more", f"{b} forgets more")])
    full = part["full"]
    ok = {k: v for k, v in full.items() if v is not None and v.get("phase") == "Succeeded"}
    for a, b in p["comparisons"]:
        if a in ok and b in ok:
            A, B = ok[a], ok[b]
            stat = lambda idx, A=A, B=B: (  # noqa: E731
                (st.mean_at(flags(A, -1, t1), idx[t1]) - st.mean_at(flags(A, 1, t1), idx[t1]))
                - (st.mean_at(flags(B, -1, t1), idx[t1]) - st.mean_at(flags(B, 1, t1), idx[t1])))
            ci = st.bootstrap(stat, {t1: len(flags(A, 1, t1))})
            claims.append([f"1 (secondary). BWT({a}) - BWT({b}), full budget", ci_text(ci),
                           st.pilot_verdict(ci, f"{a} forgets more", f"{b} forgets more")])
    if "sft" in ok and "grpo" in ok:
        A, B = ok["sft"], ok["grpo"]
        sets = {pr: len(flags(A, 0, pr)) for pr in probes}
        stat = lambda idx, A=A, B=B: statistics.fmean(  # noqa: E731
            (st.mean_at(flags(A, -1, pr), idx[pr]) - st.mean_at(flags(A, 0, pr), idx[pr]))
            - (st.mean_at(flags(B, -1, pr), idx[pr]) - st.mean_at(flags(B, 0, pr), idx[pr])) for pr in probes)
        ci = st.bootstrap(stat, sets)
        claims.append(["2 (secondary, full budget). probe change(sft) - probe change(grpo)", ci_text(ci),
                       st.pilot_verdict(ci, "sft loses more general skill", "grpo loses more general skill")])
    mm = part["matched"].get(("sft", "grpo"))
    if mm and all(mm.get(k) and "second" in mm[k] for k in ("sft", "grpo")):
        A, B = mm["sft"], mm["grpo"]
        sets = {pr: len(flags(A["first"], 0, pr)) for pr in probes}
        stat = lambda idx, A=A, B=B: statistics.fmean(  # noqa: E731
            (st.mean_at(flags(A["second"], -1, pr), idx[pr]) - st.mean_at(flags(A["first"], 0, pr), idx[pr]))
            - (st.mean_at(flags(B["second"], -1, pr), idx[pr]) - st.mean_at(flags(B["first"], 0, pr), idx[pr]))
            for pr in probes)
        ci = st.bootstrap(stat, sets)
        claims.append(["2. probe change(sft) - probe change(grpo), matched", ci_text(ci),
                       st.pilot_verdict(ci, "sft loses more general skill", "grpo loses more general skill")])
    else:
        claims.append(["2. probe change(sft) - probe change(grpo), matched", "n/a", "not decided: not run yet"])
    if "rif-grpo" in ok and "grpo" in ok:
        A, B = ok["rif-grpo"], ok["grpo"]
        ra = cb.ratio(A["totals"]["rolloutTokens"], B["totals"]["rolloutTokens"])
        rs = cb.ratio(A["totals"]["learnerSteps"], B["totals"]["learnerSteps"])
        sets = {t: len(flags(A, -1, t)) for t in seq}
        stat = lambda idx, A=A, B=B: statistics.fmean(  # noqa: E731
            st.mean_at(flags(A, -1, t), idx[t]) - st.mean_at(flags(B, -1, t), idx[t]) for t in seq)
        ci = st.bootstrap(stat, sets)
        claims.append(["3. rollout tokens / learner steps rif-grpo / grpo", f"{f(ra, 2)} / {f(rs, 2)}",
                       "one seed: no interval"])
        claims.append(["3. final AA(rif-grpo) - AA(grpo)", ci_text(ci),
                       st.pilot_verdict(ci, "rif-grpo ends lower", "rif-grpo ends higher")])
    else:
        claims.append(["3. RIF cost and accuracy", "n/a", "not decided: rif-grpo or grpo not run yet"])
    return claims
