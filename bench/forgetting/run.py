#!/usr/bin/env python
"""bench/forgetting: the one runner of every registered protocol (protocols.REGISTRY).

    OMP_NUM_THREADS=1 .venv/bin/python bench/forgetting/run.py [--protocol v1] [--quick] [--seeds 0 1 2]
    ... --protocol v2                            v1 with lr 1e-4 (v12.py's docstring)
    ... --protocol v3 --snapshot REV [--phase bases,admission,pairs] [--pairs N] [--smoke]   PROTOCOL-v3.md
    ... --protocol pilot --snapshot REV [--phase import,admission,arms|engine-check] [--device cuda]
    ... --protocol v4 --snapshot REV [--part T,M] [--phase ...] [--quick]                      PROTOCOL-v4.md
    ... --report-only        (v3, pilot, v4) rewrite the protocol's RESULTS.md section from the cache, run nothing

Every run is a `cpt run` of the product through runs.py (one cached executor: a finished run is never redone);
statistics are stats.py's; sections.py writes each protocol's RESULTS.md section and keeps every other one byte
for byte. The protocols' settings are data in protocols.py; each generation's runner (v12.py, v3.py, v4.py)
turns them into runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from protocols import REGISTRY  # noqa: E402


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--protocol", choices=sorted(REGISTRY), default="v1",
                    help="which registered protocol (default v1); see protocols.REGISTRY for each one's document")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run of the protocol's machinery (v1/v2: tiny base, 2 tasks, 2 steps, 1 seed; v3: as "
                    "--smoke; v4: Part T's wiring on the shipped tiny base); never written to the repo's RESULTS.md")
    ap.add_argument("--smoke", action="store_true", help="v3: end to end in minutes on the shipped tiny base")
    ap.add_argument("--seeds", type=int, nargs="+", help="v1/v2: override the protocol's seeds")
    ap.add_argument("--phase", default="all", help="v3: bases,admission,pairs; pilot: import,admission,arms and "
                    "engine-check (never part of all); v4: admission,arms (default all, in the protocol's order)")
    ap.add_argument("--part", default="T,M", help="v4: the parts to run, of T, M and G (G needs a GPU)")
    ap.add_argument("--pairs", type=int, help="v3/v4 Part T: run at most the first N (base, seed) pairs")
    ap.add_argument("--report-only", action="store_true", help="run nothing; rewrite RESULTS.md from the cache")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="pilot: cuda = the GPU settings (3 seeds, 500-prompt eval sets, 64 steps, vLLM on the GPU)")
    ap.add_argument("--work", type=Path, help="scratch directory (default bench/forgetting/work/...)")
    ap.add_argument("--results", type=Path, help="where to write the markdown (default RESULTS.md; quick: in --work)")
    ap.add_argument("--parallel", type=int, help="runs at once (default 1; quick: 2-3). Timings need 1.")
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--snapshot", metavar="REV", help="measure git revision REV (git archive of core/, trainer/ "
                    "and operator/) instead of the working tree")
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return importlib.import_module(REGISTRY[args.protocol].runner).main(args)


if __name__ == "__main__":
    sys.exit(main())
