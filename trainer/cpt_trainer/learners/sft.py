"""SFT with TRL's SFTTrainer on reference answers (the baseline that forgets).

Rows become prompt-completion pairs: the chat-templated prompt and `\\boxed{answer}` (or a row's own `solution`
field when the task uses a custom answer format); the loss is on the completion only.
"""

from __future__ import annotations

import time
from typing import Optional

from datasets import Dataset
from transformers import PrinterCallback
from trl import SFTConfig, SFTTrainer

from cpt_trainer.progress_callback import ProgressCallback
from cpt_core.api import CheckpointSpec, SftSpec
from cpt_core.tasks import Task, prompt_text
from cpt_trainer.learners.common import SamplerEpoch, trainer_args, world_size
from cpt_trainer.tracking import guard_integrations
from cpt_trainer.learners.replay import sft_rows


def target(row: dict) -> str:
    return str(row["solution"]) if "solution" in row else "\\boxed{" + str(row["answer"]) + "}"


def train_sft(model, tokenizer, tasks: list[Task], out_dir: str, sft: SftSpec, *, seed: int = 0,
              zero_stage: int = 2, task_index: int = 0, quiet: bool = False, callbacks: tuple = (),
              checkpoint: Optional[CheckpointSpec] = None, resume_from: Optional[str] = None,
              carried: Optional[dict] = None, replay: tuple = (), replay_fraction: float = 0.0,
              own_answers: bool = False) -> tuple[dict, SFTTrainer]:
    """Train `model` in place with the spec's SFT settings (declared once, in cpt_core.api.SftSpec); with
    `resume_from` (a step checkpoint folder) continue from its step as if never stopped. `carried` is unused
    (GRPO keeps its counters there) and accepted so both learners take the same arguments. `replay`: earlier
    tasks' solved prompts, appended as `replay_fraction` of the examples (learners/replay.py; `own_answers`:
    self-sft's replayed target is the model's own correct answer)."""
    t0 = time.time()
    ws = world_size()
    rows, replayed = sft_rows([r for t in tasks for r in t.rows], list(replay), replay_fraction, seed, own_answers)
    data = Dataset.from_list([{"prompt": prompt_text(tokenizer, r["prompt"]), "completion": target(r)}
                              for r in rows])
    config = SFTConfig(
        **trainer_args(out_dir, seed, zero_stage, sft.learning_rate, sft.epochs, sft.max_steps, checkpoint),
        per_device_train_batch_size=max(1, sft.batch_size // ws), packing=False, completion_only_loss=True,
        max_length=None, dataset_num_proc=None, eos_token=tokenizer.eos_token,
    )
    progress = ProgressCallback("train", task_index, quiet=quiet)
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                         callbacks=[progress, SamplerEpoch(), *callbacks])
    trainer.remove_callback(PrinterCallback)  # our ProgressCallback prints CPT_PROGRESS lines instead
    guard_integrations(trainer)  # a tracking server failing mid-training is a warning (spec.tracking)
    trainer.train(resume_from_checkpoint=resume_from)
    losses = progress.losses
    k = max(1, len(losses) // 10)
    return {
        "method": "sft", "steps": trainer.state.global_step, "seconds": round(time.time() - t0, 3),
        "rollout_tokens": 0, "prompts": len(data),
        "loss_first": sum(losses[:k]) / k if losses else None, "loss_last": sum(losses[-k:]) / k if losses else None,
        "loss": [round(x, 5) for x in losses],
        "token_accuracy": [round(x, 4) for x in progress.accuracies],
        "tasks": [t.name for t in tasks], **({"replay": dict(replayed, fraction=replay_fraction)} if replayed else {}),
    }, trainer
