"""bench/forgetting protocol v3 (tiny char model) and the SmolLM2-135M pilot: PROTOCOL-v3.md, executed.

    OMP_NUM_THREADS=1 .venv/bin/python bench/forgetting/run.py --protocol v3 --snapshot REV [--phase bases]
    OMP_NUM_THREADS=1 .venv/bin/python bench/forgetting/run.py --protocol pilot --snapshot REV [--phase admission]

Every phase is resumable: a finished run (spec byte-identical, report Succeeded) is cached and never redone; a
stopped runner is restarted with the same command. --report-only rewrites RESULTS.md from what is cached.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cptbench as cb  # noqa: E402

BASE_SEEDS = [0, 1, 2]


def bases(work: Path, nice: int) -> dict:
    """Part A's three bases, built (or reused under their recipe hash) one at a time."""
    out = {}
    for s in BASE_SEEDS:
        path, report = cb.cached_base(work / "bases", s, nice)
        print(f"  base {s}: {path.name} {report['eval_accuracy']} built_on {report.get('built_on')}", flush=True)
        out[s] = (path, report)
    return out


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="bench/forgetting protocol v3 and the SmolLM2 pilot (PROTOCOL-v3.md)")
    ap.add_argument("--protocol", choices=["v3", "pilot"], required=True)
    ap.add_argument("--phase", default="all", help="comma-separated phases to run (v3: bases,admission,pairs; "
                    "pilot: import,admission,arms); default all, in the protocol's order")
    ap.add_argument("--work", type=Path, help="scratch directory (default bench/forgetting/work/v3)")
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--snapshot", metavar="REV", help="measure git revision REV instead of the working tree")
    args = ap.parse_args(argv)
    work = (args.work or HERE / "work" / "v3").resolve()
    work.mkdir(parents=True, exist_ok=True)
    code = cb.use_code(args.snapshot, work)
    print(f"code measured: {code}", flush=True)
    phases = args.phase.split(",")
    if args.protocol == "v3" and ("all" in phases or "bases" in phases):
        bases(work, args.nice)
    return 0
