"""The SmolLM2-135M pilot's datasets (bench/forgetting/PROTOCOL-v3.md, Part B): `python make.py [--seed S]`.

The prompt form of examples/data/smollm2/make.py: a chat with one worked example answering in \\boxed{}, then the
question (without the example SmolLM2-135M-Instruct boxes almost nothing), built-in rewards (numeric; capitals:
exact). Candidate tasks, in the protocol's order: sub, add2 (two-digit addition), max2 (larger of two two-digit
numbers), add1; general probes: capitals (40 countries, Germany is the worked example) and mul (single-digit
multiplication, all 80 problems besides the example).

"Single-digit" subtraction and addition (amendment B1 of PROTOCOL-v3.md): the second operand is one digit, the
first 0-29 (a - b with a >= b; a + b), because the pure single-digit problems (35 subtractions, 80 additions)
are fewer than the 64 training + 32 dev + 100 eval prompts the pilot needs. Per task and seed the problems
(the worked example excluded) are shuffled once and split into train (64), dev (32) and eval (100, or fewer when
the task has fewer problems left): disjoint sets. The seed-0 files are committed next to this script.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
N_TRAIN, N_DEV, N_EVAL = 64, 32, 100
SHOTS = {
    "sub": ("What is 9 - 4?", "9 - 4 = 5. The answer is \\boxed{5}."),
    "add2": ("What is 23 + 45?", "23 + 45 = 68. The answer is \\boxed{68}."),
    "max2": ("Which number is larger, 31 or 57?", "57 is larger than 31. The answer is \\boxed{57}."),
    "add1": ("What is 3 + 5?", "3 + 5 = 8. The answer is \\boxed{8}."),
    "mul": ("What is 3 * 4?", "3 * 4 = 12. The answer is \\boxed{12}."),
    "capitals": ("What is the capital of Germany?", "The capital of Germany is \\boxed{Berlin}."),
}
CAPITALS = {
    "France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "Canada": "Ottawa", "Egypt": "Cairo",
    "Russia": "Moscow", "Greece": "Athens", "China": "Beijing", "Argentina": "Buenos Aires", "Mexico": "Mexico City",
    "the United Kingdom": "London", "Ireland": "Dublin", "Portugal": "Lisbon", "the Netherlands": "Amsterdam",
    "Belgium": "Brussels", "Austria": "Vienna", "Switzerland": "Bern", "Sweden": "Stockholm", "Norway": "Oslo",
    "Finland": "Helsinki", "Denmark": "Copenhagen", "Poland": "Warsaw", "Hungary": "Budapest",
    "the Czech Republic": "Prague", "Turkey": "Ankara", "Iran": "Tehran", "Iraq": "Baghdad",
    "Saudi Arabia": "Riyadh", "Kenya": "Nairobi", "Nigeria": "Abuja", "South Korea": "Seoul", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "Indonesia": "Jakarta", "the Philippines": "Manila", "Australia": "Canberra", "Peru": "Lima",
    "Cuba": "Havana", "Romania": "Bucharest",
}
TASKS = ("sub", "add2", "max2", "add1")
PROBES = ("capitals", "mul")


def problems(task: str) -> list[tuple[str, str]]:
    """Every problem of a task or probe, the worked example excluded, in a fixed order."""
    if task == "sub":
        out = [(f"What is {a} - {b}?", str(a - b)) for a in range(30) for b in range(1, 10) if a >= b]
    elif task == "add1":
        out = [(f"What is {a} + {b}?", str(a + b)) for a in range(30) for b in range(1, 10)]
    elif task == "add2":
        out = [(f"What is {a} + {b}?", str(a + b)) for a in range(10, 100) for b in range(10, 100)]
    elif task == "max2":
        out = [(f"Which number is larger, {a} or {b}?", str(max(a, b))) for a in range(10, 100)
               for b in range(10, 100) if a != b]
    elif task == "mul":
        out = [(f"What is {a} * {b}?", str(a * b)) for a in range(1, 10) for b in range(1, 10)]
    elif task == "capitals":
        out = [(f"What is the capital of {c}?", cap) for c, cap in CAPITALS.items()]
    else:
        raise ValueError(task)
    return [p for p in out if p[0] != SHOTS[task][0]]


def chat(task: str, question: str) -> list[dict]:
    q, a = SHOTS[task]
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}, {"role": "user", "content": question}]


def solution(task: str, question: str, answer: str) -> str:
    """SFT's target in the very form the task's worked example demonstrates (issue 28: a bare `\\boxed{6}` target
    trains a change of format, not the skill): `a - b = c. The answer is \\boxed{c}.`, `B is larger than A. ...`."""
    if task == "max2":
        a, b = question.removeprefix("Which number is larger, ").rstrip("?").split(" or ")
        other = b if answer == a else a
        return f"{answer} is larger than {other}. The answer is \\boxed{{{answer}}}."
    if task == "capitals":
        country = question.removeprefix("What is the capital of ").rstrip("?")
        return f"The capital of {country} is \\boxed{{{answer}}}."
    expr = question.removeprefix("What is ").rstrip("?")
    return f"{expr} = {answer}. The answer is \\boxed{{{answer}}}."


def rows(task: str, probs: list, with_solution: bool = False) -> list[dict]:
    """Rows as the product reads them; `with_solution` adds the on-format SFT target (v4's training sets; the v3
    pilot's committed files have none, and stay as they were)."""
    out = [{"prompt": chat(task, q), "answer": a} for q, a in probs]
    if with_solution:
        for row, (q, a) in zip(out, probs):
            row["solution"] = solution(task, q, a)
    return out


def split(task: str, seed: int = 0, n_eval: int = N_EVAL) -> tuple[list, list, list]:
    """A task's train, dev and eval problems for `seed`, shuffled once and disjoint (a probe: eval only)."""
    probs = problems(task)
    random.Random(f"smollm2-pilot:{task}:{seed}").shuffle(probs)
    if task in PROBES:
        return [], [], probs[:n_eval]
    return probs[:N_TRAIN], probs[N_TRAIN:N_TRAIN + N_DEV], probs[N_TRAIN + N_DEV:N_TRAIN + N_DEV + n_eval]


def _write(path: Path, data: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in data)


def write_all(out: os.PathLike, seed: int = 0, n_eval: int = N_EVAL, solutions: bool = False) -> dict:
    """train/dev/eval files of every candidate and the probes' eval files into `out`; returns the set sizes.
    `solutions`: training rows carry the on-format `solution` (answer-only SFT then needs the rows without it)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for task in TASKS:
        train, dev, ev = split(task, seed, n_eval)
        for name, chunk in (("train", train), ("dev", dev), ("eval", ev)):
            _write(out / f"{task}-{name}.jsonl", rows(task, chunk, with_solution=solutions and name == "train"))
        sizes[task] = {"train": len(train), "dev": len(dev), "eval": len(ev)}
    for probe in PROBES:
        ev = split(probe, seed, n_eval)[2]
        _write(out / f"{probe}-eval.jsonl", rows(probe, ev))
        sizes[probe] = {"eval": len(ev)}
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-eval", type=int, default=N_EVAL)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--solutions", action="store_true", help="training rows carry the on-format SFT target")
    args = ap.parse_args()
    print(json.dumps(write_all(args.out, args.seed, args.n_eval, args.solutions)))


if __name__ == "__main__":
    main()
