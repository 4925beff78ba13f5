"""The three stage entry points (filter, train, evaluate) over a StageConfig and the run's storage.

Each stage: validate every input first (datasets, rewards, the checkpoint it starts from) so bad input fails
before any compute; load the model; do its one job; write its outputs under tasks/<i>-<name>/. `evaluate` writes
eval.json and then commits the task (manifest last). The first stage of a task clears leftovers of an earlier
attempt (storage.prepare_task); a stage of a task already committed for this spec_hash is a no-op.
Only rank 0 does I/O; filter and evaluate run on rank 0 alone (other ranks return at once).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Optional

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

from cpt_core.api import SFT_METHODS, STAGES, CptSpec
from cpt_core.results import NO_SIGNAL
from cpt_core.stage import StageConfig, stages_for

from cpt_core import protocol
from cpt_trainer.evaluate import evaluate_row, solved_rows
from cpt_trainer.learners.common import world_size
from cpt_trainer.rif import run_rif
from cpt_trainer import tracking
from cpt_trainer.rollout import make_engine
from cpt_trainer.step_checkpoints import StepState, clear_steps, model_identity
from cpt_trainer.world import rank
from cpt_core.storage import (CorruptTask, StorageError, fetch_checkpoint, layout, load_task, open_store,
                              open_store_for_spec, prepare_task)
from cpt_core.storage import owner
from cpt_core.storage.manifest import mark_damaged
from cpt_core.storage.staging import abort_killed_uploads, fetch_verified, publish_checkpoint
from cpt_core.tasks import Task, load_task as load_dataset_task, parse_jsonl

log = logging.getLogger(__name__)


class StageError(ValueError):
    """A precondition of the stage is not met (e.g. the previous task is not committed). Exit code 2."""


def stage_seed(spec: CptSpec, index: int, stage: str) -> int:
    return spec.seed * 1009 + index * 17 + STAGES.index(stage) + 1


# ------------------------------------------------------------------------------------------------ inputs

def train_task(spec: CptSpec, index: int) -> Task:
    t = spec.tasks[index - 1]
    return load_dataset_task(t.name, t.train, t.reward, t.answer_pattern, spec.storage)


def eval_tasks(spec: CptSpec, index: int) -> tuple[list[Task], list[Task]]:
    """Tasks seen so far (all tasks for the base row 0, to measure plasticity) and the general benchmarks."""
    limit = spec.evaluation.max_samples
    seen = spec.tasks if index == 0 else spec.tasks[:index]
    tasks = [load_dataset_task(t.name, t.eval, t.reward, t.answer_pattern, spec.storage, limit) for t in seen]
    general = [load_dataset_task(b.name, b.eval, b.reward, b.answer_pattern, spec.storage, limit)
               for b in spec.general]
    return tasks, general


def fetch_model_uri(uri: str, spec: CptSpec, workdir: str) -> str:
    """A local directory holding the model at `uri` (local path, file:// or s3:// prefix)."""
    if uri.startswith("s3://"):
        local = os.path.join(workdir, "model")
        s = spec.storage
        files = open_store(uri, endpoint=s.endpoint, region=s.region, path_style=s.path_style).download_dir("", local)
        if not files:
            raise StageError(f"model {uri} is empty or missing")
        return local
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise StageError(f"model {uri}: no config.json (not a Hugging Face model directory)")
    return path


def start_model_dir(cfg: StageConfig, store, workdir: str) -> str:
    """The model a stage starts from: evaluate uses this task's fresh checkpoint; filter/train use the previous
    task's committed checkpoint, or the base model for task 1 (and for evaluation of row 0)."""
    i, spec = cfg.task_index, cfg.spec
    if cfg.stage == "evaluate" and i > 0:
        return scored_checkpoint(cfg, store, workdir)[0]
    if i <= 1:
        return fetch_model_uri(spec.model, spec, workdir)
    prev = spec.tasks[i - 2].name
    committed = load_task(store, i - 1, prev)
    if committed is None or committed.checkpoint is None:
        raise StageError(f"task {i - 1} ({prev}) is not committed: its checkpoint cannot be used")
    try:
        return fetch_checkpoint(store, committed, os.path.join(workdir, "model"))
    except CorruptTask as exc:  # committed, then damaged: say so in storage (the operator reports it), stop
        mark_damaged(store, committed, str(exc))
        raise StageError(f"task {i - 1} ({prev}) is committed but damaged: {exc}") from None


def start_identity(cfg: StageConfig, store, model_dir: str) -> str:
    """What the train stage starts from, for step checkpoint fingerprints: the previous task's committed hashes
    (task 2 on), else the base model's files."""
    if cfg.task_index > 1:
        prev = load_task(store, cfg.task_index - 1, cfg.spec.tasks[cfg.task_index - 2].name)
        if prev is not None and prev.checkpoint:
            return model_identity(model_dir, tuple(f for f in prev.files if f.key.startswith(prev.checkpoint + "/")))
    return model_identity(model_dir)


def scored_checkpoint(cfg: StageConfig, store, workdir: str) -> tuple[str, dict]:
    """This task's fresh checkpoint, as its train attempt published it, verified file by file; and the
    sub-manifest (what the commit records: the attempt and the hashes of the bytes evaluate scores)."""
    local = os.path.join(workdir, "model")
    try:
        return local, fetch_verified(store, cfg.task_index, cfg.task_name, local)
    except StorageError as exc:
        raise StageError(str(exc)) from None


def load_model(path: str):
    dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model, tokenizer


# ------------------------------------------------------------------------------------------------ stages

def run_filter(cfg: StageConfig, store, workdir: str) -> dict:
    spec, i = cfg.spec, cfg.task_index
    task = train_task(spec, i)
    model, tokenizer = load_model(start_model_dir(cfg, store, workdir))
    rif = spec.rif_effective
    if rif is None:
        raise StageError(f"the filter stage runs only with method rif-grpo or self-sft, not {spec.method}")
    engine = make_engine(spec.rollout.engine, model, tokenizer, cfg.rollout_url, spec.rollout.tensor_parallel)
    protocol.progress("filter", i, 0, 1)
    res = run_rif(engine, tokenizer, task, rollouts=rif.rollouts, min_correct=rif.min_correct,
                  temperature=spec.grpo.temperature, max_tokens=spec.grpo.max_completion_tokens,
                  seed=stage_seed(spec, i, "filter"))
    kept = res.solution_rows() if spec.method == "self-sft" else res.kept_rows
    stats = dict(res.stats(), engine=engine.name, examples=len(kept))
    store.put_bytes(layout.task_key(i, cfg.task_name, layout.KEPT),
                    "".join(json.dumps(r) + "\n" for r in kept).encode())
    store.put_json(layout.task_key(i, cfg.task_name, layout.RIF), stats)
    protocol.progress("filter", i, 1, 1, kept=res.kept, dropped=res.dropped)
    return stats


def training_rows(cfg: StageConfig, store, task: Task) -> Task:
    """For the sampling methods the filter stage's rows replace the pool: rif-grpo's kept prompts, self-sft's
    correct completions (one row each, the completion as `solution`)."""
    if not cfg.spec.has_filter_stage:
        return task
    key = layout.task_key(cfg.task_index, cfg.task_name, layout.KEPT)
    if not store.exists(key):
        raise StageError(f"{key} is missing: run the filter stage of task {cfg.task_index} first")
    data = store.get_bytes(key)
    task.rows = parse_jsonl(data, key) if data.strip() else []
    return task


def learn(spec: CptSpec, model, tokenizer, tasks: list[Task], out_dir: str, task_index: int, engine=None,
          seed: int = 0, callbacks: tuple = (), replay: tuple = (), **resume) -> tuple[dict, object]:
    """One learner run over `tasks` with the spec's method and hyper-parameters (also the multi-task entry).
    `replay`: earlier tasks' solved prompts (spec.replay). `resume`: checkpoint / resume_from / carried for step
    checkpoints (the train stage)."""
    zero = spec.learner.zero_stage
    fraction = spec.replay.fraction if replay else 0.0
    if spec.method in SFT_METHODS:
        from cpt_trainer.learners.sft import train_sft

        return train_sft(model, tokenizer, tasks, out_dir, spec.sft, seed=seed, zero_stage=zero,
                         task_index=task_index, callbacks=callbacks, replay=replay, replay_fraction=fraction,
                         own_answers=spec.method == "self-sft", **resume)
    from cpt_trainer.learners.grpo import train_grpo

    return train_grpo(model, tokenizer, tasks, out_dir, spec.grpo, seed=seed, zero_stage=zero, engine=engine,
                      task_index=task_index, callbacks=callbacks, online=spec.online_rif, replay=replay,
                      replay_fraction=fraction, **resume)


def curve_callback(spec: CptSpec, index: int, tokenizer):
    """The learning/forgetting curve of task `index`'s training when spec.evaluation.everySteps asks for one."""
    every = spec.evaluation.every_steps
    if not every:
        return None
    from cpt_trainer.curve import CurveCallback

    tasks, general = eval_tasks(spec, index)
    return CurveCallback(tokenizer, index, tasks, general, every, spec.evaluation.max_completion_tokens)


def kl_callback(spec: CptSpec, index: int, model, tokenizer, task: Task, workdir: str, carried: dict):
    """The KL early warning of task `index`'s training when spec.forgetting.klEverySteps asks for it: completions
    sampled now on the task's first klPrompts prompts, from the model the task starts from and (task 2 on) from
    the base model, loaded for that and let go. `carried`: the step checkpoint's counters (points kept on resume)."""
    every = spec.forgetting.kl_every_steps
    if not every or not task.rows:
        return None
    from cpt_trainer.kl import KlCallback, KlProbe
    from cpt_core.tasks import prompt_text

    prompts = [prompt_text(tokenizer, r["prompt"]) for r in task.rows[:spec.forgetting.kl_prompts]]
    seed, max_tokens = stage_seed(spec, index, "train"), spec.evaluation.max_completion_tokens
    start = KlProbe(model, tokenizer, prompts, max_tokens, seed)
    base = start
    if index >= 2:
        base_model, _ = load_model(fetch_model_uri(spec.model, spec, os.path.join(workdir, "kl-base")))
        base = KlProbe(base_model, tokenizer, prompts, max_tokens, seed)
        del base_model
    return KlCallback({"task_start": start, "base": base}, every, carried, index)


def save_model(trainer, model, tokenizer, out_dir: str) -> None:
    """Every rank calls this: under ZeRO-3 saving gathers shards collectively; rank 0 writes."""
    if trainer is not None:
        trainer.save_model(out_dir)
    elif rank() == 0:
        model.save_pretrained(out_dir)
    if rank() == 0:
        tokenizer.save_pretrained(out_dir)


def run_train(cfg: StageConfig, store, workdir: str) -> dict:
    spec, i = cfg.spec, cfg.task_index
    task = train_task(spec, i)
    pool = len(task.rows)
    task = training_rows(cfg, store, task)
    start = start_model_dir(cfg, store, workdir)
    model, tokenizer = load_model(start)
    out_dir = os.path.join(workdir, "checkpoint")
    trainer = None
    if not task.rows:  # RIF dropped everything: nothing can teach; carry the model forward unchanged
        rif = spec.rif_effective
        stats = {"method": spec.method, "steps": 0, "seconds": 0.0, "rollout_tokens": 0, "prompts": 0,
                 NO_SIGNAL: f"RIF dropped all {pool} training prompts (none solved {rif.min_correct}+ times in "
                            f"{rif.rollouts} rollouts)"}
    else:
        engine = None
        if spec.method not in SFT_METHODS:
            engine = make_engine(spec.rollout.engine, model, tokenizer, cfg.rollout_url, spec.rollout.tensor_parallel)
        curve = curve_callback(spec, i, tokenizer)
        steps = StepState.open(cfg, store, workdir, start_identity(cfg, store, start), task.rows, world_size())
        kl = kl_callback(spec, i, model, tokenizer, task, workdir, steps.carried)
        replay = tuple(replay_tasks(cfg, store)) if spec.replay.enabled else ()
        stats, trainer = learn(spec, model, tokenizer, [task], os.path.join(workdir, "trainer"), i, engine,
                               seed=stage_seed(spec, i, "train"), replay=replay,
                               callbacks=tuple(c for c in (curve, kl, steps.callback) if c), **steps.learner_kwargs)
        if curve and curve.points:
            stats["curve"] = curve.points
        stats["engine"] = getattr(engine, "name", None)
        if kl is not None:
            stats.update(kl.stats())
        stats.update(steps.stats())
        tracking.log_train(stats)
    save_model(trainer, model, tokenizer, out_dir)
    if rank() == 0:  # this attempt's own prefix, sub-manifest last (storage/staging.py)
        store.put_json(layout.task_key(i, cfg.task_name, layout.TRAIN_STATS), stats)
        publish_checkpoint(store, i, cfg.task_name, cfg.attempt, out_dir)
        clear_steps(store, i, cfg.task_name)  # superseded by the checkpoint just published
    return {k: v for k, v in stats.items() if k not in ("reward_curve", "loss", "token_accuracy", "curve")}


def run_evaluate(cfg: StageConfig, store, workdir: str) -> dict:
    from cpt_core.storage import commit_task

    spec, i = cfg.spec, cfg.task_index
    tasks, general = eval_tasks(spec, i)
    scored = None
    if i > 0:
        path, scored = scored_checkpoint(cfg, store, workdir)
    else:
        path = start_model_dir(cfg, store, workdir)
    model, tokenizer = load_model(path)
    engine = make_engine(spec.evaluation.engine, model, tokenizer, cfg.rollout_url, spec.rollout.tensor_parallel)
    set_seed(stage_seed(spec, i, "evaluate"))
    protocol.progress("evaluate", i, 0, 1)
    row = evaluate_row(engine, tokenizer, i, tasks, general, spec.evaluation.max_completion_tokens)
    row["engine"] = engine.name
    if spec.replay.enabled and i > 0:
        row["replay_probe"] = write_solved(cfg, store, engine, tokenizer)
    store.put_json(layout.task_key(i, cfg.task_name, layout.EVAL), row)
    summary = {"tasks": row["tasks"], "general": row["general"]}
    commit_task(store, i, cfg.task_name, cfg.spec_hash, summary, checkpoint=scored)
    tracking.log_evaluation(store, cfg, row)  # the row, AA and BWT (spec.tracking)
    protocol.progress("evaluate", i, 1, 1)
    return {k: row[k] for k in ("task_index", "tasks", "general", "seconds")}


def write_solved(cfg: StageConfig, store, engine, tokenizer) -> dict:
    """spec.replay: score up to probePrompts of the task's training prompts (a seeded sample of a larger pool)
    greedily with the model just trained, and keep the solved ones with the task's results (solved.jsonl), for
    later tasks to replay. Cost: probePrompts greedy generations per task."""
    import random

    spec, i = cfg.spec, cfg.task_index
    task = train_task(spec, i)
    n = spec.replay.probe_prompts
    if len(task.rows) > n:
        task.rows = random.Random(stage_seed(spec, i, "evaluate")).sample(task.rows, n)
    solved = solved_rows(engine, tokenizer, task, spec.evaluation.max_completion_tokens)
    store.put_bytes(layout.task_key(i, cfg.task_name, layout.SOLVED),
                    "".join(json.dumps(r) + "\n" for r in solved).encode())
    return {"scored": len(task.rows), "solved": len(solved)}


def replay_tasks(cfg: StageConfig, store) -> list[Task]:
    """spec.replay: the earlier tasks' solved training prompts (solved.jsonl of each committed task 1..i-1), one
    Task each with its own reward, so replayed groups are scored as their task scores them."""
    from cpt_core.tasks import make_reward

    spec, out = cfg.spec, []
    for j in range(1, cfg.task_index):
        t = spec.tasks[j - 1]
        committed = load_task(store, j, t.name)
        key = layout.task_key(j, t.name, layout.SOLVED)
        if committed is None or not any(f.key == key for f in committed.files):
            continue  # committed before replay was turned on: nothing to replay from it
        data = store.get_bytes(key)
        rows = parse_jsonl(data, key) if data.strip() else []
        if rows:
            out.append(Task(name=t.name, rows=rows, reward=make_reward(t.reward, t.answer_pattern),
                            reward_name=t.reward, pattern=t.answer_pattern))
    return out


RUNNERS = {"filter": run_filter, "train": run_train, "evaluate": run_evaluate}


def run_stage(cfg: StageConfig, workdir: Optional[str] = None) -> dict:
    """Run one stage; returns the CPT_RESULT summary. Raises TaskError/StageError for bad input."""
    spec, i = cfg.spec, cfg.task_index
    if i > len(spec.tasks):
        raise StageError(f"task_index {i} is beyond the {len(spec.tasks)} tasks of the spec")
    if cfg.stage not in stages_for(spec, i):
        raise StageError(f"stage {cfg.stage!r} is not part of task {i} for method {spec.method}")
    base = {"stage": cfg.stage, "task_index": i, "task": cfg.task_name, "run": cfg.run}
    if cfg.stage in ("filter", "evaluate") and world_size() > 1 and rank() != 0:
        return dict(base, skipped="rank > 0")
    set_seed(stage_seed(spec, i, cfg.stage))
    store = open_store_for_spec(spec.storage)
    if rank() == 0:
        # Like the operator: nothing is prepared, written or deleted under another run's prefix, and a base
        # model under another run's prefix (its checkpoints) is not read.
        refused = owner.check(store, cfg.run_uid, cfg.namespace, cfg.run) or (
            cfg.run_uid and owner.model_conflict(lambda uri: open_store_for_spec(spec.storage.model_copy(
                update={"uri": uri})), spec.model, cfg.run_uid))
        if refused:
            raise StageError(refused)
        if cfg.stage == stages_for(spec, i)[0]:
            done = prepare_task(store, i, cfg.task_name, cfg.spec_hash)
        else:
            abort_killed_uploads(store, i, cfg.task_name)  # the first stage's prepare_task does it for itself
            done = load_task(store, i, cfg.task_name)
            done = done if done is not None and done.spec_hash == cfg.spec_hash else None
        if done is not None:
            return dict(base, skipped="already committed")
    tracker = tracking.open_tracking(cfg, rank())  # one run per task, stage and attempt; none by default
    ok = False
    try:
        with tempfile.TemporaryDirectory(prefix=f"cpt-{cfg.stage}-") as tmp:
            summary = dict(base, **RUNNERS[cfg.stage](cfg, store, workdir or tmp))
        tracking.log_summary(cfg.stage, summary)
        ok = True
        return summary
    finally:
        tracker.finish(ok)
