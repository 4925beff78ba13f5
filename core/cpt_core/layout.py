"""Where things live under a run's storage URI (docs/design.md, storage). Pure names, no I/O.

<uri>/tasks/<index>-<name>/checkpoint/   HF safetensors model + tokenizer (train stage)
<uri>/tasks/<index>-<name>/rif.json      RIF statistics (filter stage);  kept.jsonl  the kept prompts
<uri>/tasks/<index>-<name>/train.json    learner statistics (steps, rewards, rollout tokens, seconds)
<uri>/tasks/<index>-<name>/eval.json     this task's row of the accuracy matrix (evaluate stage)
<uri>/tasks/<index>-<name>/solved.jsonl  training prompts the model solved when this task was evaluated (replay)
<uri>/tasks/<index>-<name>/resume.json   written by a train stage that resumed from a step checkpoint (attempt, step)
                                         while it runs, so status can say so before the task commits
<uri>/tasks/<index>-<name>/manifest.json every file's key, size, sha256; written last = committed
Index 0 is the base model ("0-base"): only eval.json + manifest.json.

<uri>/steps/<index>-<name>/a<attempt>-s<step>/   a step checkpoint of the train stage (model, optimizer, scheduler,
                                                 RNG, data position; HF Trainer's checkpoint folder) and its
                                                 step.json (files + what it was trained for), written last
Step checkpoints live beside tasks/, not in it: a task's first stage resets tasks/<i>-<name>/ and its commit lists
that folder, and neither must touch or carry them (docs/checkpoints.md).
"""

TASKS = "tasks"
CHECKPOINT = "checkpoint"
RIF = "rif.json"
KEPT = "kept.jsonl"
TRAIN_STATS = "train.json"
EVAL = "eval.json"
RESUME = "resume.json"  # a train stage resumed from a step checkpoint: attempt, step of total, resumes
SOLVED = "solved.jsonl"  # spec.replay: the task's training rows solved at its evaluation, with the completion
MANIFEST = "manifest.json"
STEPS = "steps"
STEP_MANIFEST = "step.json"


def task_dir(index: int, name: str) -> str:
    """Relative prefix of one task, e.g. `tasks/2-reverse`."""
    return f"{TASKS}/{index}-{name}"


def task_key(index: int, name: str, leaf: str) -> str:
    return f"{task_dir(index, name)}/{leaf}"


def steps_dir(index: int, name: str) -> str:
    """Relative prefix of one task's step checkpoints, e.g. `steps/2-reverse`."""
    return f"{STEPS}/{index}-{name}"


def step_dir(index: int, name: str, attempt: int, step: int) -> str:
    """One step checkpoint: `steps/2-reverse/a1-s00000040` (zero-padded so keys sort by step)."""
    return f"{steps_dir(index, name)}/a{attempt}-s{step:08d}"
