"""Protocol v3's statistics (PROTOCOL-v3.md), pure functions: the admission rule, matched steps from the
checkpoint curves, per-run metrics, paired differences with 95% t-intervals, the pilot's per-prompt bootstrap."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from typing import Callable, Optional

# two-sided 95% Student t quantiles t_{0.975, df}
T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 6: 2.4469, 7: 2.3646, 8: 2.3060, 9: 2.2622,
        10: 2.2281, 11: 2.2010, 12: 2.1788, 13: 2.1604, 14: 2.1448, 15: 2.1314, 16: 2.1199, 17: 2.1098}
PAIRS_REGISTERED = 9


def best_constant(answers: list[str]) -> float:
    """Accuracy of the best constant answer on a set: the frequency of its most frequent answer."""
    return Counter(answers).most_common(1)[0][1] / len(answers)


def wilson_lower(p: float, n: int, z: float = 1.959964) -> float:
    """Lower end of the Wilson 95% score interval of a proportion p observed on n items."""
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / denom


def admitted(base: float, trained: list, c: float, n: int, max_base: float = 0.80, margin: float = 0.10) -> bool:
    """PROTOCOL-v3.md's admission rule: base accuracy <= max_base and, for every method, a - c >= margin and the
    Wilson lower bound of a above c. A method whose run did not succeed (None) fails the rule."""
    if base is None or base > max_base + 1e-12:
        return False
    return all(a is not None and a - c >= margin - 1e-12 and wilson_lower(a, n) > c for a in trained)


def t_interval(values: list) -> dict:
    """Mean and 95% t-interval (n - 1 degrees of freedom) of paired differences."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(vals)
    if n == 0:
        return {"n": 0, "mean": None, "lo": None, "hi": None}
    m = statistics.fmean(vals)
    if n < 2:
        return {"n": 1, "mean": m, "lo": None, "hi": None}
    h = T975[n - 1] * statistics.stdev(vals) / math.sqrt(n)
    return {"n": n, "mean": m, "lo": m - h, "hi": m + h}


def verdict(ci: dict, below: str, above: str, needed: int = PAIRS_REGISTERED) -> str:
    """The registered rule: interval below 0 -> `below`, above 0 -> `above`, else not distinguishable; with fewer
    than the registered pairs, no verdict."""
    if ci["n"] < needed:
        return f"not decided: {ci['n']} of {needed} pairs"
    if ci["hi"] < 0:
        return below
    if ci["lo"] > 0:
        return above
    return "not distinguishable"


# ------------------------------------------------------------------------------------------------ curves

def curve(run: dict, j: int) -> list:
    """Checkpoint points of task j's training (train.json `curve`), [] when there are none."""
    tr = run["trains"][j] if j < len(run["trains"]) else None
    return (tr or {}).get("curve") or []


def dev_curve(run: dict, j: int, task: str) -> list[tuple[int, float]]:
    return [(pt["step"], pt["general"][f"dev-{task}"]) for pt in curve(run, j) if f"dev-{task}" in pt["general"]]


def matched_steps(run_a: dict, run_b: dict, seq: list) -> Optional[tuple[list, list]]:
    """For each task j: L_j = the lower of the two arms' final dev accuracies; each arm's matched step = its first
    checkpoint with dev accuracy >= L_j. None when either run lacks a curve for some task (failed, or trained 0
    steps). Returns ([arm a's step per task], [arm b's step per task])."""
    out_a, out_b = [], []
    for j, task in enumerate(seq, start=1):
        ca, cb = dev_curve(run_a, j, task), dev_curve(run_b, j, task)
        if not ca or not cb:
            return None
        level = min(ca[-1][1], cb[-1][1])
        out_a.append(next(step for step, acc in ca if acc >= level - 1e-9))
        out_b.append(next(step for step, acc in cb if acc >= level - 1e-9))
    return out_a, out_b


# ------------------------------------------------------------------------------------------------ metrics

def probe_change(general_rows: list, benchmarks: list, probes: list, first: int = 0, last: int = -1):
    idx = [benchmarks.index(p) for p in probes if p in benchmarks]
    if not idx or not general_rows:
        return None
    return statistics.fmean(general_rows[last][k] - general_rows[first][k] for k in idx)


def full_metrics(run: Optional[dict], probes: list, ceiling: Optional[str]) -> Optional[dict]:
    """One full-budget sequence: final AA, BWT, forgetting, plasticity, probe change, ceiling-probe change,
    rollout tokens, learner steps, wall time."""
    if run is None or run.get("phase") != "Succeeded":
        return None
    bench = run["benchmarks"]
    return {"aa": run["averageAccuracy"], "bwt": run["backwardTransfer"], "forgetting": run["forgetting"],
            "plasticity": run["plasticity"],
            "general": probe_change(run["general"], bench, probes),
            "ceiling": probe_change(run["general"], bench, [ceiling]) if ceiling else None,
            "tokens": run["totals"]["rolloutTokens"], "steps": run["totals"]["learnerSteps"],
            "wall": run["run"]["wallSeconds"],
            "filtered": [t.get("filteredFraction") for t in run["perTask"][1:]]}


def matched_metrics(m: Optional[dict], seq: list, probes: list) -> Optional[dict]:
    """A matched sequence (two runs): a[1][1] from the first run, a[2][1] from the second run's benchmark t1,
    a[2][2] its task; BWT = a[2][1] - a[1][1]; probe change = after task 2 minus the first run's base row."""
    if not m or m.get("phase") != "Succeeded" or "second" not in m:
        return None
    first, second = m["first"], m["second"]
    t1, t2 = seq
    a11 = first["matrix"][1][0]
    bench2 = second["benchmarks"]
    a21 = second["general"][-1][bench2.index(t1)]
    a22 = second["matrix"][-1][0]
    idx1 = [first["benchmarks"].index(p) for p in probes if p in first["benchmarks"]]
    idx2 = [bench2.index(p) for p in probes if p in bench2]
    gen = (statistics.fmean(second["general"][-1][k2] - first["general"][0][k1] for k1, k2 in zip(idx1, idx2))
           if idx1 else None)
    return {"bwt": a21 - a11, "aa": (a21 + a22) / 2, "general": gen, "a11": a11, "a21": a21, "a22": a22,
            "check_row0": second["general"][0][bench2.index(t1)] - a11,
            "steps": [first["totals"]["learnerSteps"], second["totals"]["learnerSteps"]]}


# ------------------------------------------------------------------------------------------------ bootstrap

def bootstrap(stat: Callable[[dict], float], sets: dict, reps: int = 2000, seed: int = 0) -> dict:
    """Per-prompt bootstrap: `sets` maps a set name to its length; each replicate resamples every set's prompt
    indices (the same indices for both arms: a paired bootstrap) and calls stat(indices by set). 95% percentile
    interval."""
    rng = random.Random(seed)
    point = stat({k: list(range(n)) for k, n in sets.items()})
    vals = sorted(stat({k: [rng.randrange(n) for _ in range(n)] for k, n in sets.items()}) for _ in range(reps))
    return {"n": 1, "mean": point, "lo": vals[int(0.025 * reps)], "hi": vals[int(0.975 * reps) - 1]}


def mean_at(flags: str, idx: list) -> float:
    return sum(flags[i] == "1" for i in idx) / len(idx)


def pilot_verdict(ci: dict, below: str, above: str, floor: float = 0.15) -> str:
    """The pilot's rule: a difference counts only when its bootstrap interval excludes 0 and it is at least
    ~0.15 (PROTOCOL-v3.md: smaller ones are reported as not distinguishable)."""
    if ci["mean"] is None:
        return "not decided: no data"
    if ci["hi"] < 0 and ci["mean"] <= -floor:
        return below
    if ci["lo"] > 0 and ci["mean"] >= floor:
        return above
    return "not distinguishable"


# ------------------------------------------------------------------------------------------------ v4

def clustered_bootstrap(values: dict, reps: int = 10000, seed: int = 0) -> dict:
    """PROTOCOL-v4.md's base-clustered interval of the mean paired difference: `values` maps (base, seed) to d;
    each replicate draws bases with replacement, then seeds with replacement within each drawn base, and takes
    the mean of the drawn d; 95% percentile interval. Why: pairs that share a base are not independent, and a
    t-interval over pairs treats them as if they were (v3's nine pairs share three bases)."""
    by_base: dict = {}
    for (b, _), v in sorted(values.items()):
        by_base.setdefault(b, []).append(v)
    if not by_base:
        return {"n": 0, "mean": None, "lo": None, "hi": None}
    bases = list(by_base)
    rng = random.Random(seed)
    draws = []
    for _ in range(reps):
        drawn = [by_base[rng.choice(bases)] for _ in bases]
        drawn = [v for vs in drawn for v in (rng.choice(vs) for _ in vs)]
        draws.append(statistics.fmean(drawn))
    draws.sort()
    return {"n": len(values), "mean": statistics.fmean(values.values()), "lo": draws[int(0.025 * reps)],
            "hi": draws[int(0.975 * reps) - 1]}


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def _t_power(shift: float, tc: float, df: int, steps: int = 1500) -> float:
    """P(|T| > tc) for T = (Z + shift) / sqrt(V / df), V ~ chi2(df): the power of a two-sided t-test (shift 0:
    its size), by integrating over V on a grid (no scipy here)."""
    hi = df + 40 * math.sqrt(2 * df) + 40
    h = hi / steps
    total = 0.0
    for k in range(steps):
        v = (k + 0.5) * h
        dens = math.exp((df / 2 - 1) * math.log(v) - v / 2 - (df / 2) * math.log(2) - math.lgamma(df / 2))
        c = tc * math.sqrt(v / df)
        total += dens * h * ((1 - _normal_cdf(c - shift)) + _normal_cdf(-c - shift))
    return total


def _solve(fn, target: float, lo: float, hi: float) -> float:
    """The x in [lo, hi] where the increasing fn(x) reaches target (bisection)."""
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fn(mid) < target else (lo, mid)
    return (lo + hi) / 2


def t_quantile_975(df: int) -> float:
    return T975[df] if df in T975 else _solve(lambda t: -_t_power(0.0, t, df), -0.05, 1.0, 10.0)


def mde(sd: float, n: int, power: float = 0.80) -> float:
    """Minimum detectable effect of a two-sided 5% paired t-test over n pairs with SD sd per pair, at the given
    power (exact noncentral t, PROTOCOL-v4.md's table: SD 0.075 gives 0.079 at 9 pairs)."""
    tc = t_quantile_975(n - 1)
    return _solve(lambda d: _t_power(d / sd * math.sqrt(n), tc, n - 1), power, 0.0, 10 * sd)


def mde_binomial(n: int, p: float = 0.5) -> float:
    """PROTOCOL-v4.md's bound for Part M's pooled probe: 2.8 x sqrt(2 p (1 - p) / n) (two unpaired proportions,
    80% power, two-sided 5%); pairing the arms per prompt makes the real one smaller."""
    return 2.8 * math.sqrt(2 * p * (1 - p) / n)


def both_verdict(t_ci: dict, c_ci: dict, below: str, above: str, needed: int) -> str:
    """PROTOCOL-v4.md's Verdict words for Part T: both intervals below 0 -> `below`, both above -> `above`, else
    not distinguishable; fewer than the registered pairs -> not decided."""
    if t_ci["n"] < needed:
        return f"not decided: {t_ci['n']} of {needed} pairs"
    if t_ci["lo"] is None or c_ci["lo"] is None:
        return "not decided: no interval from one pair"
    if t_ci["hi"] < 0 and c_ci["hi"] < 0:
        return below
    if t_ci["lo"] > 0 and c_ci["lo"] > 0:
        return above
    return "not distinguishable"


def match_level(final_a: Optional[float], final_b: Optional[float], start: float, margin: float) -> Optional[float]:
    """PROTOCOL-v4.md's matched level: the lower of the two arms' final dev accuracies, if it is >= start +
    margin (else None: "not matched: no common gain")."""
    if final_a is None or final_b is None:
        return None
    level = min(final_a, final_b)
    return level if level >= start + margin - 1e-12 else None


def first_at(points: list, level: float) -> Optional[int]:
    """The first (step, dev accuracy) checkpoint at or above level: the arm's matched step."""
    return next((step for step, acc in points if acc >= level - 1e-9), None)
