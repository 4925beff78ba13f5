"""Writes the SmolLM2 demo's datasets (committed next to this file): `python examples/data/smollm2/make.py`.

The demo (examples/smollm2.yaml) trains two tasks the model gets mostly wrong, so that learning shows beyond the
eval's noise: add2 (two-digit addition, base ~0.3) then sub (a - b, a < 30, b one digit, base ~0.4), with capitals
as the general probe. Problems, prompt form and SFT targets are the SmolLM2 pilot's (../smollm2-pilot/make.py,
seed 0): each prompt is a chat with one worked example answering in \\boxed{} (SmolLM2-135M-Instruct asked in
words alone boxed 0-5 of 32 sampled answers), and each training row carries `solution`, SFT's target in the very
form the example demonstrates (`a - b = c. The answer is \\boxed{c}.`); a bare `\\boxed{c}` target would train a
change of format, not the task. Sets: 64 training prompts per task, 40 eval prompts per task and probe; train and
eval disjoint, the worked examples in neither.
"""

import importlib.util
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
N_EVAL = 40  # a 95% interval of about +-0.15 on one accuracy near 0.5; the README states the demo's noise
TASKS = ("add2", "sub")
PROBES = ("capitals",)


def _pilot():
    """The pilot's generator, loaded by path (examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("smollm2_pilot_make", HERE.parent / "smollm2-pilot" / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)


def main() -> None:
    pilot = _pilot()
    for task in TASKS + PROBES:
        train, _, ev = pilot.split(task, seed=0, n_eval=N_EVAL)  # the pilot's seed-0 sets (no dev set here)
        if train:
            _write(HERE / f"{task}-train.jsonl", pilot.rows(task, train, with_solution=True))
        _write(HERE / f"{task}-eval.jsonl", pilot.rows(task, ev))


if __name__ == "__main__":
    main()
