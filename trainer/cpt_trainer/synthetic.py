"""Synthetic tasks, so examples and tests need no download: `synthetic:add`, `synthetic:reverse`, ...

Why pools: an early pilot (docs/design.md, Lessons) found that a task whose training prompts the base model already saw in pre-training
teaches nothing measurable. Every problem therefore belongs to exactly one pool, decided by a hash of its prompt
(not by the seed): `pretrain` (what `build-base` trains on), `train` (task training pools) and `eval`. Pools are
disjoint for every seed; the seed only picks which problems of a pool are drawn.

Each row is {"prompt": str, "answer": str, "skill": name}; the model answers `\\boxed{answer}`.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from typing import Callable, Iterator

Problem = tuple[str, str]  # (prompt, answer)
POOLS = {"pretrain": (0, 60), "train": (60, 80), "eval": (80, 100)}  # hash buckets out of 100
LETTERS = string.ascii_lowercase[:12]  # a..l: small alphabet keeps the char model tiny


def _add(rng: random.Random) -> Problem:
    a, b = rng.randrange(100), rng.randrange(100)
    return f"{a}+{b}", str(a + b)


def _sub(rng: random.Random) -> Problem:
    a = rng.randrange(100)
    b = rng.randrange(a + 1)
    return f"{a}-{b}", str(a - b)


def _word(rng: random.Random, lo: int, hi: int, alphabet: str = LETTERS) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def _reverse(rng: random.Random) -> Problem:
    w = _word(rng, 3, 6)
    return f"rev {w}", w[::-1]


def _sort(rng: random.Random) -> Problem:
    w = _word(rng, 3, 6, string.digits)
    return f"sort {w}", "".join(sorted(w))


def _copy(rng: random.Random) -> Problem:
    w = _word(rng, 3, 8)
    return f"copy {w}", w


def _count(rng: random.Random) -> Problem:
    w = _word(rng, 4, 8, LETTERS[:4])
    c = rng.choice(LETTERS[:4])
    return f"count {c} {w}", str(w.count(c))


def _max(rng: random.Random) -> Problem:
    w = _word(rng, 3, 6, string.digits)
    return f"max {w}", max(w)


GENERATORS: dict[str, Callable[[random.Random], Problem]] = {
    "add": _add, "sub": _sub, "reverse": _reverse, "sort": _sort, "copy": _copy, "count": _count, "max": _max,
}
REWARDS = {"add": "numeric", "sub": "numeric", "count": "numeric"}  # default: exact


def pool_of(prompt: str) -> str:
    """Which pool a problem belongs to; a pure function of the prompt text."""
    bucket = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16) % 100
    return next(name for name, (lo, hi) in POOLS.items() if lo <= bucket < hi)


def sample(skill: str, rng: random.Random, pool: str) -> Iterator[Problem]:
    """An endless stream of problems of one skill from one pool (repeats possible; see generate for unique)."""
    gen = GENERATORS[skill]
    while True:
        prompt, answer = gen(rng)
        if pool_of(prompt) == pool:
            yield prompt, answer


def generate(skill: str, n: int, seed: int = 0, pool: str = "train") -> list[dict]:
    """n distinct problems of `skill` from `pool`, deterministic given the seed."""
    if skill not in GENERATORS:
        raise ValueError(f"unknown synthetic task {skill!r}; available: {sorted(GENERATORS)}")
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; available: {sorted(POOLS)}")
    rng = random.Random(f"{skill}:{pool}:{seed}")
    seen: set[str] = set()
    rows: list[dict] = []
    stream = sample(skill, rng, pool)
    for tries in range(200 * n + 10_000):
        prompt, answer = next(stream)
        if prompt not in seen:
            seen.add(prompt)
            rows.append({"prompt": prompt, "answer": answer, "skill": skill})
            if len(rows) == n:
                return rows
    raise ValueError(f"synthetic:{skill} pool {pool!r} has fewer than {n} distinct problems")


def write_jsonl(rows: list[dict], path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
