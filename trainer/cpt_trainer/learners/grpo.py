"""GRPO with TRL's GRPOTrainer: G sampled completions per prompt, group-normalised advantage, KL to the start.

One optimizer step per generation batch (steps_per_generation=1): `promptsPerStep` prompts x `groupSize`
completions, fully on-policy. Generation runs in the learner with transformers (`hf`) unless a vLLM engine is
given, in which case TRL's `rollout_func` hook sends prompts to the server and weights are pushed after each
optimizer step.
"""

from __future__ import annotations

import time
from typing import Optional

import torch
from datasets import Dataset
from transformers import PrinterCallback, TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import RepeatSampler

from cpt_core.protocol import progress
from cpt_trainer.progress_callback import ProgressCallback
from cpt_trainer.rollout.fleet import StalePolicyError
from cpt_core.api import CheckpointSpec, GrpoSpec, RifSpec
from cpt_core.results import NO_SIGNAL
from cpt_core.tasks import Task, prompt_text
from cpt_core.rewards import is_correct
from cpt_trainer.learners.common import SamplerEpoch, combined_reward, extra_columns, trainer_args, world_size
from cpt_trainer.tracking import guard_integrations
from cpt_trainer.learners.online_rif import CARRIED_KEY, OnlineRif
from cpt_trainer.learners.replay import COMPLETION, ReplayDraws, epoch_stream
from cpt_core.validation import replay_slots


def fill_step(rows: list[dict], prompts_per_step: int) -> list[dict]:
    """TRL's sampler drops a partial batch of prompts, so a pool smaller than one step (RIF kept 7 of 256 with
    promptsPerStep 8) trained 0 steps in silence. Such a pool is cycled up to one step's prompts: each kept prompt
    is trained on, the step keeps its size (and its divisibility by WORLD_SIZE)."""
    if not rows or len(rows) >= prompts_per_step:
        return rows
    return [rows[i % len(rows)] for i in range(prompts_per_step)]


ROW_ID = "cpt_row"  # the dataset index of each row, for online RIF's per-prompt records (never passed to rewards)


def _dataset(tokenizer, tasks: list[Task], prompts_per_step: int, replay: tuple = ()) -> Dataset:
    """The task's rows (indices 0..n-1), then the replay pool's (n.., in ReplayDraws' order)."""
    rows = fill_step([dict(r, task=t.name) for t in tasks for r in t.rows], prompts_per_step)
    rows += [{k: v for k, v in r.items() if k != COMPLETION} | {"task": t.name} for t in replay for r in t.rows]
    keep = extra_columns(rows)
    return Dataset.from_list([
        {"prompt": prompt_text(tokenizer, r["prompt"]), "answer": r["answer"], "task": r["task"], ROW_ID: k,
         **{c: r[c] for c in keep}} for k, r in enumerate(rows)])


class _Counter:
    """Wraps the reward to count rollout tokens (completion ids TRL passes) in `carried`, which step checkpoints
    save and a resumed stage starts from."""

    def __init__(self, fn, carried: dict):
        self.fn, self.carried = fn, carried
        carried.setdefault("rollout_tokens", 0)
        self.__name__ = "reward"

    @property
    def tokens(self) -> int:
        return self.carried["rollout_tokens"]

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        kwargs.pop(ROW_ID, None)
        if completion_ids is not None:
            self.carried["rollout_tokens"] += sum(len(ids) for ids in completion_ids)
        return self.fn(prompts=prompts, completions=completions, **kwargs)


class _EpochRepeatSampler(RepeatSampler):
    """TRL's RepeatSampler, with epoch e's order a function of (seed, e): the stock one draws each epoch's
    permutation from a generator that only advances while it runs, so a run resumed in epoch e > 0 would
    replay epoch 0's order (the data-position bug of OpenRLHF #1103). Same orders as the stock sampler in an
    uninterrupted run: epoch e skips the e permutations before its own."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:  # the Trainer calls it before each epoch
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            self.generator.manual_seed(self.seed)
            for _ in range(self.epoch):
                torch.randperm(self.num_samples, generator=self.generator)
        return super().__iter__()


class _StreamSampler(torch.utils.data.Sampler):
    """TRL's sampler shape (each prompt index G times in a row, batches of B prompts) over a stream of the task's
    prompts that spans every epoch of the task (the Trainer sees one epoch): online RIF's (skipped prompts leave
    no hole, the next prompts fill the batch) or plain epochs; with replay each batch's last r slots are the
    replayed prompts of that step (dataset indices offset + pool index)."""

    def __init__(self, stream, per_step: int, steps: int, group: int, draws: Optional[ReplayDraws] = None,
                 offset: int = 0):
        self.stream, self.per_step, self.steps, self.group = stream, per_step, steps, group
        self.draws, self.offset = draws, offset

    def __len__(self) -> int:
        return self.steps * (self.per_step + (self.draws.slots if self.draws else 0)) * self.group

    def __iter__(self):
        batch: list[int] = []
        step = 0
        for row in self.stream():
            batch.append(row)
            if len(batch) == self.per_step:  # a last partial batch is dropped, as TRL's sampler does
                if self.draws is not None:
                    batch += [self.offset + k for k in self.draws.draw(step)]
                for r in batch:
                    for _ in range(self.group):
                        yield r
                batch, step = [], step + 1


class _GRPOTrainer(GRPOTrainer):
    online: Optional[OnlineRif] = None
    stream: Optional[_StreamSampler] = None
    carried: Optional[dict] = None

    def _get_train_sampler(self, dataset=None):
        stock = super()._get_train_sampler(dataset)
        if type(stock) is not RepeatSampler or stock.seed is None:
            raise TypeError(f"TRL's GRPO sampler changed ({type(stock).__name__}): resume would lose its data position")
        if self.stream is not None:
            return self.stream
        return _EpochRepeatSampler(stock.data_source, stock.mini_repeat_count, stock.batch_size,
                                   stock.repeat_count, stock.shuffle, stock.seed)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # all ranks'
        if self.online is not None and self.model.training:
            from accelerate.utils import gather_object

            rows = gather_object([x[ROW_ID] for x in inputs])
            total = torch.nansum(rewards, dim=1).tolist()
            self.online.observe(rows, total, self.num_generations, self.state.global_step,
                                [is_correct(r) for r in total])
            self.carried[CARRIED_KEY] = self.online.snapshot()
        return rewards


class _PushWeights(TrainerCallback):
    """Pushes the policy to the rollout replicas as learner step k: at the start (a resumed Trainer has just
    loaded step k's weights) and after every optimizer step. Every reading of the replicas' labels (after a push,
    before a re-sync) becomes a CPT_PROGRESS line with `policy_versions` {replica: step or null}, the source of
    cpt_rollout_policy_version."""

    def __init__(self, engine, task_index: int):
        self.engine, self.task_index, self.total = engine, task_index, 0
        if getattr(engine, "weight_sync", None) is not None:
            engine.weight_sync.report = self._report

    def _report(self, served: dict) -> None:
        versions = self.engine.policy_versions(served)
        progress("train", self.task_index, self.engine.weight_sync.step, self.total,
                 policy_versions={str(r): v for r, v in enumerate(versions.values())})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.total = state.max_steps
        self.engine.sync_weights(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.engine.sync_weights(model, state.global_step)


def _vllm_rollout(engine, tokenizer, temperature: float, max_tokens: int):
    """TRL rollout_func: TRL repeats each prompt G times in a row; ask the server for n=G samples of each run of
    identical prompts (one request, shared prefix) and return them in TRL's order."""

    def rollout(prompts: list, trainer) -> dict:
        calls = len(getattr(engine, "policy_steps", ()))
        runs: list[list] = []  # [prompt, count]
        for p in prompts:
            if runs and runs[-1][0] == p:
                runs[-1][1] += 1
            else:
                runs.append([p, 1])
        comps = []
        for n in sorted({n for _, n in runs}):
            todo = [k for k, (_, c) in enumerate(runs) if c == n]
            for k, group in zip(todo, engine.generate([runs[k][0] for k in todo], n=n, temperature=temperature,
                                                      max_tokens=max_tokens)):
                runs[k].append(group)
        for _, _, group in runs:
            comps.extend(group)
        used = set(getattr(engine, "policy_steps", [])[calls:])
        if used and used != {trainer.state.global_step}:  # fail loudly rather than train on stale rollouts
            raise StalePolicyError(f"step {trainer.state.global_step + 1}'s rollouts came from policy step(s) "
                                   f"{sorted(used)}, not the learner's step {trainer.state.global_step}")
        return {
            "prompt_ids": [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts],
            "completion_ids": [c.token_ids for c in comps],
            "logprobs": [c.logprobs or [0.0] * len(c.token_ids) for c in comps],
        }

    return rollout


def train_grpo(model, tokenizer, tasks: list[Task], out_dir: str, grpo: GrpoSpec, *, seed: int = 0,
               zero_stage: int = 2, engine=None, task_index: int = 0, quiet: bool = False,
               callbacks: tuple = (), checkpoint: Optional[CheckpointSpec] = None, resume_from: Optional[str] = None,
               carried: Optional[dict] = None, online: Optional[RifSpec] = None, replay: tuple = (),
               replay_fraction: float = 0.0) -> tuple[dict, GRPOTrainer]:
    """Train `model` in place on the union of tasks' rows with the spec's GRPO settings (their one declaration,
    with their defaults, is cpt_core.api.GrpoSpec); returns the train.json statistics and the trainer.
    With `resume_from` (a step checkpoint folder) it continues from that step as if never stopped; `carried`
    holds the counters a step checkpoint saves besides the Trainer's state (rollout tokens, online RIF's records).
    With `online` (spec.rif in mode online) the epochs run as one stream that skips zero-variance prompts
    (learners/online_rif.py). With `replay` (earlier tasks' solved prompts) and `replay_fraction`, that share of
    each step's prompt slots is replayed prompts (learners/replay.py)."""
    t0 = time.time()
    ws = world_size()
    g = grpo
    completions_per_step = g.prompts_per_step * g.group_size
    if completions_per_step % ws:
        raise ValueError(f"promptsPerStep x groupSize ({completions_per_step}) must divide by WORLD_SIZE ({ws})")
    carried = carried if carried is not None else {}
    replay = tuple(t for t in replay if t.rows) if replay_fraction else ()
    dataset = _dataset(tokenizer, tasks, g.prompts_per_step, replay)
    n = len(dataset) - sum(len(t.rows) for t in replay)  # the task's own prompts
    draws = ReplayDraws(list(replay), replay_slots(replay_fraction, g.prompts_per_step), seed) if replay else None
    own = g.prompts_per_step - (draws.slots if draws else 0)  # slots per step for the task's own prompts
    steps = g.max_steps or g.epochs * (n // g.prompts_per_step)  # GRPO's own count, replay or not
    records, stream = None, None
    if online is not None:
        records = OnlineRif(n, own, g.epochs, seed, online.reprobe, online.reprobe_floor,
                            max_prompts=g.max_steps * own if g.max_steps else None,
                            state=carried.get(CARRIED_KEY), epoch_batches=n // g.prompts_per_step)
        stream = _StreamSampler(records.stream, own, records.max_prompts // own, g.group_size, draws, n)
    elif draws is not None:
        stream = _StreamSampler(lambda: epoch_stream(n, own, n // g.prompts_per_step, seed, steps), own, steps,
                                g.group_size, draws, n)
    config = GRPOConfig(  # a stream (online RIF, replay) spans every epoch: the Trainer sees one
        **trainer_args(out_dir, seed, zero_stage, g.learning_rate, 1 if stream else g.epochs, g.max_steps,
                       checkpoint),
        per_device_train_batch_size=completions_per_step // ws, steps_per_generation=1, num_iterations=1,
        num_generations=g.group_size, beta=g.kl_coef, temperature=g.temperature, top_k=0, top_p=1.0,
        max_completion_length=g.max_completion_tokens, log_completions=False, shuffle_dataset=True,
        remove_unused_columns=False,
    )
    reward = _Counter(combined_reward(list(tasks) + list(replay)), carried)
    progress = ProgressCallback("train", task_index, quiet=quiet)
    callbacks = [progress, SamplerEpoch(), *callbacks]
    rollout_func = None
    if engine is not None and engine.name == "vllm":
        rollout_func = _vllm_rollout(engine, tokenizer, g.temperature, g.max_completion_tokens)
        callbacks.append(_PushWeights(engine, task_index))
    trainer = _GRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=dataset,
                           processing_class=tokenizer, callbacks=callbacks, rollout_func=rollout_func)
    trainer.online, trainer.stream, trainer.carried = records, stream, carried
    trainer.remove_callback(PrinterCallback)  # our ProgressCallback prints CPT_PROGRESS lines instead
    guard_integrations(trainer)  # a tracking server failing mid-training is a warning (spec.tracking)
    trainer.train(resume_from_checkpoint=resume_from)
    curve = progress.rewards
    k = max(1, len(curve) // 10)
    stats = {} if not progress.zero_std or min(progress.zero_std) < 1.0 else {NO_SIGNAL: (
        f"every group of {g.group_size} completions got equal rewards at all {len(progress.zero_std)} steps "
        f"(mean reward {sum(curve) / max(1, len(curve)):.2f}): no policy gradient")}
    pool = sum(len(t.rows) for t in tasks)
    if 0 < pool < g.prompts_per_step:
        stats["pool_filled"] = (f"{pool} prompt(s), fewer than promptsPerStep {g.prompts_per_step}: each step "
                                "repeats them to fill its batch")
    if records is not None:  # all dropped = every group equal at every step: the no_signal rule above says so
        stats["online_rif"] = records.stats(g.group_size)
    if draws is not None:
        stats["replay"] = dict(draws.stats(trainer.state.global_step), fraction=replay_fraction)
    if trainer.state.global_step == 0 and NO_SIGNAL not in stats:  # never 0 steps in silence
        stats[NO_SIGNAL] = f"no optimizer step was taken on {pool} prompt(s)"
    return stats | {
        "method": "grpo", "steps": trainer.state.global_step, "seconds": round(time.time() - t0, 3),
        "rollout_tokens": reward.tokens * ws, "prompts": sum(len(t.rows) for t in tasks),
        "mean_reward_first": sum(curve[:k]) / k if curve else None,
        "mean_reward_last": sum(curve[-k:]) / k if curve else None,
        "reward_curve": [round(r, 4) for r in curve], "loss": [round(x, 5) for x in progress.losses],
        "tasks": [t.name for t in tasks], **_fleet_stats(engine),
    }, trainer


def _fleet_stats(engine) -> dict:
    """train.json's record of the rollout policy: the learner step each generation used (one per optimizer step,
    each equal to the step it trained from) and every fleet re-sync."""
    sync = getattr(engine, "weight_sync", None)
    if sync is None:
        return {}
    return {"rollout_policy_steps": list(engine.policy_steps), "rollout_recoveries": list(sync.recoveries)}
