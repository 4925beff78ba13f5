"""What both learners share: device/distributed arguments, the DeepSpeed config, multi-task rewards.

DeepSpeed is used only under a distributed launcher (WORLD_SIZE > 1: torchrun, deepspeed, a PyTorchJob);
a single process trains with plain torch. On CPU: use_cpu=True, bf16=False, no gradient checkpointing (what
TRL needs to run on a CPU-only torch build).
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from transformers import TrainerCallback

from cpt_core.api import CheckpointSpec
from cpt_core.tasks import Task
from cpt_trainer import tracking


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def deepspeed_config(zero_stage: int) -> dict:
    """A ZeRO config whose batch/lr/clipping values are filled from the TrainingArguments ("auto")."""
    cuda = torch.cuda.is_available()
    cfg = {
        "zero_optimization": {"stage": zero_stage, "overlap_comm": False, "contiguous_gradients": True},
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if zero_stage == 3:
        cfg["zero_optimization"].update(stage3_gather_16bit_weights_on_model_save=True)
    if not cuda:
        cfg["bf16"] = {"enabled": False}
    return cfg


def trainer_args(out_dir: str, seed: int, zero_stage: int, lr: float, epochs: int,
                 max_steps: Optional[int], checkpoint: Optional[CheckpointSpec] = None) -> dict:
    """TrainingArguments fields common to GRPOConfig and SFTConfig. With `checkpoint` (spec.checkpoint), HF
    Trainer saves a full checkpoint folder every `everySteps` (cpt_trainer.step_checkpoints adds the time
    trigger and the upload); two stay on local disk: the newest and the one possibly still uploading.
    TRL's `report_to`: the tracking backends whose run this stage opened (cpt_trainer.tracking; none by default)."""
    cuda = torch.cuda.is_available()
    args = dict(
        output_dir=out_dir, seed=seed, data_seed=seed, learning_rate=lr, num_train_epochs=epochs,
        max_steps=max_steps or -1, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, logging_steps=1, report_to=tracking.report_to(), disable_tqdm=True,
        use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(), gradient_checkpointing=False,
        dataloader_num_workers=0, gradient_accumulation_steps=1,
    )
    if checkpoint is not None and checkpoint.enabled:
        args.update(save_strategy="steps", save_steps=checkpoint.every_steps or 10**9, save_total_limit=2,
                    save_only_model=False)
    else:
        args.update(save_strategy="no")
    if world_size() > 1:
        args["deepspeed"] = deepspeed_config(zero_stage)
        if not cuda:
            args["ddp_backend"] = "gloo"
    return args


class SamplerEpoch(TrainerCallback):
    """Tells the train sampler its epoch at each epoch's start, however deeply it is wrapped.

    A stage resumed mid-epoch with several ranks iterates SkipBatchSampler(BatchSamplerShard(BatchSampler(
    sampler))); neither accelerate's `DataLoaderShard.set_epoch` nor HF Trainer's explicit reach goes that deep, so
    the resumed epoch would be drawn in the sampler's default epoch 0 order (another data position than the run
    never stopped). The Trainer's own dataloader (the callback's `train_dataloader`) wraps the same sampler object.
    The epoch is the integer part of state.epoch, which the Trainer sets to e at epoch e's start and restores with
    the step count on resume."""

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        epoch, obj, seen = int(state.epoch + 1e-6), train_dataloader, 0
        while obj is not None and seen < 8:
            inner = getattr(obj, "batch_sampler", None) or getattr(obj, "sampler", None)
            if inner is not None and hasattr(inner, "set_epoch") and inner is not obj:
                inner.set_epoch(epoch)
            obj, seen = inner, seen + 1


def combined_reward(tasks: list[Task]):
    """One TRL reward over rows of several tasks (multi-task training): dispatch on the `task` column."""
    by_name = {t.name: t for t in tasks}

    def reward(prompts, completions, task, **kwargs) -> list[float]:
        out: list[Optional[float]] = [None] * len(completions)
        for name in set(task):
            idx = [k for k, t in enumerate(task) if t == name]
            sub = {key: [vals[k] for k in idx] for key, vals in kwargs.items() if isinstance(vals, list)
                   and len(vals) == len(completions)}
            values = by_name[name].reward(prompts=[prompts[k] for k in idx],
                                          completions=[completions[k] for k in idx], **sub)
            for k, v in zip(idx, values):
                out[k] = v
        return out

    reward.__name__ = "reward"
    return reward


def extra_columns(rows: list[dict]) -> list[str]:
    """Columns present in every row besides prompt/answer, passed through to rewards."""
    keys = set(rows[0])
    for r in rows[1:]:
        keys &= set(r)
    return sorted(keys - {"prompt", "answer", "task"})
