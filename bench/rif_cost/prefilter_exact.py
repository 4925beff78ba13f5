"""Post hoc (2026-12-07): why prefilter's measured cost missed its registered formula at E=1 (claim C4).

    python3 bench/rif_cost/prefilter_exact.py [bench/rif_cost/online-runs.json]

The registered formula, (1 - f) + N / (E G), counts every kept prompt as trained. The learner trains GRPO's own
count of full batches: E x floor(K / B) steps for K prompts at B prompts per step (`learners/grpo.py`), so up to
B - 1 kept prompts of each epoch are not rolled out. The exact ratio for a pool of P prompts (a multiple of B, so
GRPO itself drops none) is

    prefilter / grpo = floor(K / B) x B / P + N / (E G),   K = (1 - f) P kept.

This script recomputes both formulas for every prefilter task of the committed per-run records (no run, stdlib
only) and prints a markdown table; PROTOCOL-online.md's verdict on C4 stays what the runner wrote.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
POOL, BATCH, FILTER_ROLLOUTS, GROUP = 32, 8, 8, 8  # PROTOCOL-online.md: P, promptsPerStep, rif.rollouts, groupSize


def registered(f: float, epochs: int) -> float:
    return (1 - f) + FILTER_ROLLOUTS / (epochs * GROUP)


def exact(f: float, epochs: int) -> float:
    kept = round((1 - f) * POOL)
    return (kept // BATCH) * BATCH / POOL + FILTER_ROLLOUTS / (epochs * GROUP)


def rows(records: list[dict]) -> list[dict]:
    grpo = {(r["epochs"], r["seed"], t["task"]): t["rollouts"] for r in records if r["arm"] == "grpo"
            for t in r["tasks"]}
    out = []
    for r in records:
        if r["arm"] != "prefilter":
            continue
        for t in r["tasks"]:
            f, e = t["prefilter_f"], r["epochs"]
            out.append({"E": e, "seed": r["seed"], "task": t["task"], "f": f, "steps": t["steps"],
                        "measured": t["rollouts"] / grpo[(e, r["seed"], t["task"])],
                        "registered": registered(f, e), "exact": exact(f, e)})
    return out


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else HERE / "online-runs.json"
    table = rows(json.loads(path.read_text()))
    print("| E | seed | task | f | steps | measured / grpo | registered formula | exact formula |")
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['E']} | {r['seed']} | {r['task']} | {r['f']:.4f} | {r['steps']} | {r['measured']:.3f} | "
              f"{r['registered']:.3f} | {r['exact']:.3f} |")
    for e in sorted({r["E"] for r in table}):
        sub = [r for r in table if r["E"] == e]
        reg = sum(abs(r["measured"] - r["registered"]) for r in sub) / len(sub)
        ex = max(abs(r["measured"] - r["exact"]) for r in sub)
        print(f"\nE={e}: mean |measured - registered| {reg:.3f}; max |measured - exact| {ex:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
