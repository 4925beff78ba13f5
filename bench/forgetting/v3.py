"""bench/forgetting protocol v3 (tiny char model) and the SmolLM2-135M pilot: PROTOCOL-v3.md, executed.

    OMP_NUM_THREADS=1 .venv/bin/python bench/forgetting/run.py --protocol v3 --snapshot REV [--phase bases]
    OMP_NUM_THREADS=1 .venv/bin/python bench/forgetting/run.py --protocol pilot --snapshot REV [--phase admission]
    ... --report-only        rewrite RESULTS.md's v3 / pilot sections from the runs cached so far, run nothing

Every run is a `cpt run` of the product (report.json, train.json curves and eval.json per-prompt results read
back). Resumable: a finished run (its spec file byte-identical, its report Succeeded or Failed) is cached in its
folder and never redone; a stopped runner continues where it stopped with the same command. Phases (v3): bases,
admission, pairs[:N]; (pilot): import, admission, arms, and (only when named) engine-check (v3engines.py).

This module is the driver (collect_v3, collect_pilot, report, main); the parts: protocols.py (the registered
settings), runs.py (one cached `cpt run`), v3parta.py (Part A, the tiny char model), v3pilot.py (Part B, the
SmolLM2 pilot), stats.py (statistics), v3doc.py, v3pilotdoc.py, v3pilotclaims.py and v3enginedoc.py (RESULTS.md
sections), v3engines.py (the pilot's post-hoc engine check).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import cptbench as cb
import sections
import v3doc
import v3engines
import v3pilotdoc
from protocols import BASE_SEEDS, PAIR_ORDER
from v3parta import PartA
from v3pilot import Pilot

HERE = Path(__file__).resolve().parent


def collect_v3(work: Path, nice: int, run_phases: set, max_pairs: Optional[int], smoke: bool = False) -> dict:
    """Runs what run_phases asks for (in the protocol's order) and gathers everything cached so far."""
    a = PartA(work, nice, smoke)
    if "bases" in run_phases:
        a.bases()
    base_reports = {b: (a.base_if_built(b) or (None, None))[1] for b in BASE_SEEDS}
    adm = a.admission("admission" in run_phases)
    seqs = a.sequences(adm)
    base_evals = {b: a.base_eval(b, run=bool(run_phases)) for b in BASE_SEEDS if base_reports[b] is not None}
    probes = a.probes(seqs, base_evals) if seqs else None
    pairs = {}
    if seqs and probes is not None:
        for k, (b, s) in enumerate(PAIR_ORDER):
            run = "pairs" in run_phases and (max_pairs is None or k < max_pairs)
            pairs[(b, s)] = a.pair(run, b, s, seqs, probes)
    return {"bases": base_reports, "base_evals": base_evals, "admission": adm, "sequences": seqs,
            "probes": probes, "pairs": pairs}


def collect_pilot(work: Path, nice: int, run_phases: set, device: str) -> dict:
    pl = Pilot(work, nice, device)
    imp = pl.import_model("import" in run_phases)
    adm = pl.admission("admission" in run_phases) if imp else {"table": {}, "admitted": [], "complete": False}
    seq = adm["admitted"] if len(adm["admitted"]) == 2 else None
    estimate = halved = None
    if seq:
        # PROTOCOL-v3.md: if the admission runs show the arms would exceed 90 minutes, the step count is halved
        # (decided here, before any arm runs). Estimate: 4 arms = 2 SFT-like + 2 GRPO-like runs of both tasks.
        estimate = 2 * sum(adm["table"][t]["sft_wall"] + adm["table"][t]["grpo_wall"] for t in seq)
        halved = estimate > 90 * 60
        if halved:
            pl.halve()
    arms = pl.arms("arms" in run_phases, seq) if seq else {}
    check = None
    if arms:  # the post-hoc engine check (PROTOCOL-v3.md addendum of 2026-11-30): runs only when asked
        check = v3engines.collect(work, nice, arms, adm, "engine-check" in run_phases)
    return {"import": imp, "admission": adm, "sequence": seq, "arms": arms, "engine": pl.engine()[0],
            "protocol": pl.p, "device": device, "arms_estimate_s": estimate, "halved": halved,
            "engine_check": check}


def report(protocol: str, data: dict, results: Path, device: str = "cpu") -> None:
    """The v3 or pilot section of RESULTS.md from what was collected (sections.write_marked keeps it byte for byte
    when nothing but its stamps would change)."""
    snap = f" --snapshot {data['snapshot']}" if data.get("snapshot") else ""
    cmd = f"OMP_NUM_THREADS=1 .venv/bin/python bench/forgetting/run.py --protocol {protocol}"
    if protocol == "v3":
        key, body = "v3", v3doc.v3_section(data, cmd + snap)
    else:
        key = "pilot" if device == "cpu" else "pilot-cuda"
        body = v3pilotdoc.pilot_section(data, cmd + ("" if device == "cpu" else f" --device {device}") + snap)
    sections.write_marked(key, body, results)


def main(args) -> int:
    """run.py --protocol v3|pilot (arguments parsed by run.py)."""
    default = "v3" if args.protocol == "v3" else ("pilot" if args.device == "cpu" else "pilot-cuda")
    smoke = args.smoke or args.quick
    work = (args.work or HERE / "work" / (default + ("-smoke" if smoke else ""))).resolve()
    results = args.results or (work / "RESULTS.md" if smoke else HERE / "RESULTS.md")
    work.mkdir(parents=True, exist_ok=True)
    code = cb.use_code(args.snapshot, work)
    print(f"code measured: {code}", flush=True)
    phases = set() if args.report_only else set(
        {"v3": ["bases", "admission", "pairs"], "pilot": ["import", "admission", "arms"]}[args.protocol]
        if args.phase == "all" else args.phase.split(","))
    t0 = time.monotonic()
    if args.protocol == "v3":
        data = collect_v3(work, args.nice, phases, args.pairs, smoke)
    else:
        data = collect_pilot(work, args.nice, phases, args.device)
    data.update(code=code, snapshot=args.snapshot, machine=cb.machine(), invocation_s=time.monotonic() - t0)
    report(args.protocol, data, results, args.device)
    print(f"wrote {results}", flush=True)
    return 0
