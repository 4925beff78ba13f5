"""Writes the SmolLM2 example's datasets (committed next to this file): `python examples/data/smollm2/make.py`.

Tasks in the chat model's own words: each prompt is a chat with one worked example that answers in \\boxed{}
(SmolLM2-135M-Instruct asked in words alone boxed 0-5 of 32 sampled answers; with the example it boxes most),
so the built-in rewards' format part (0.1) and accuracy part (0.9) both apply. Single-digit problems: the model
gets two-digit subtraction wrong nearly always (no RIF-kept prompt in a probe of 8), single-digit addition often
right. Train and eval sets are disjoint; the worked examples are in neither.
"""

import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
N = 8  # prompts per train / eval set: a small CPU run
SHOTS = {"add": ("What is 3 + 5?", "3 + 5 = 8. The answer is \\boxed{8}."),
         "sub": ("What is 9 - 4?", "9 - 4 = 5. The answer is \\boxed{5}."),
         "capitals": ("What is the capital of Germany?", "The capital of Germany is \\boxed{Berlin}.")}
CAPITALS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo", "Canada": "Ottawa",
            "Egypt": "Cairo", "Russia": "Moscow", "Greece": "Athens"}


def chat(task: str, question: str) -> list[dict]:
    q, a = SHOTS[task]
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a},
            {"role": "user", "content": question}]


def problems(task: str) -> list[tuple[str, str]]:
    """Every single-digit problem of the task except the worked example, in a fixed shuffled order."""
    if task == "add":
        out = [(f"What is {a} + {b}?", str(a + b)) for a in range(1, 10) for b in range(1, 10)]
    else:
        out = [(f"What is {a} - {b}?", str(a - b)) for a in range(2, 10) for b in range(1, a)]
    out = [p for p in out if p[0] != SHOTS[task][0]]
    random.Random(f"smollm2:{task}").shuffle(out)
    return out


def row(task: str, question: str, answer: str, with_solution: bool) -> dict:
    """A training row carries `solution`, SFT's target in the very form the worked example demonstrates
    (`a - b = c. The answer is \\boxed{c}.`): without it SFT would train the bare `\\boxed{c}` and so a change of
    answer format, not the task (the SmolLM2 pilot's confound). GRPO and evaluation read only `answer`."""
    out = {"prompt": chat(task, question), "answer": answer}
    if with_solution:
        expr = question.removeprefix("What is ").removesuffix("?")
        out["solution"] = f"{expr} = {answer}. The answer is \\boxed{{{answer}}}."
    return out


def write(name: str, rows: list[dict]) -> None:
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)


def main() -> None:
    for task in ("add", "sub"):
        probs = problems(task)
        for pool, chunk in (("train", probs[:N]), ("eval", probs[N:2 * N])):
            write(f"{task}-{pool}.jsonl", [row(task, q, a, with_solution=pool == "train") for q, a in chunk])
    write("capitals-eval.jsonl", [{"prompt": chat("capitals", f"What is the capital of {c}?"), "answer": a}
                                  for c, a in CAPITALS.items()])


if __name__ == "__main__":
    main()
