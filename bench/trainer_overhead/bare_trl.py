#!/usr/bin/env python
"""The baseline of bench/trainer_overhead: a bare TRL GRPOTrainer script, nothing of cpt_trainer imported.

    python bench/trainer_overhead/bare_trl.py --model DIR --train FILE.jsonl --out DIR --steps N --seed S

Same model, data and GRPOConfig as our train stage (cpt_trainer.learners.grpo.train_grpo with
cpt_trainer.learners.common.trainer_args on one CPU process); keep the two in step when either changes.
The reward is the product's `exact` reward written inline (0.9 * exact match of the last \\boxed{} + 0.1 * format).
TRL's own PrinterCallback prints one log dict per step (logging_steps=1); the benchmark timestamps those lines.
"""

import argparse
import json
import time

T_START = time.monotonic()

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402


def last_boxed(text):
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 1
    for k in range(start + 7, len(text)):
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        if depth == 0:
            return text[start + 7:k]
    return None


def reward(completions, answer, **kwargs):
    out = []
    for c, a in zip(completions, answer):
        pred = last_boxed(c if isinstance(c, str) else c[-1]["content"])
        if pred is None:
            out.append(0.0)
        else:
            out.append(0.9 * (" ".join(pred.split()).lower() == " ".join(str(a).split()).lower()) + 0.1)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--prompts-per-step", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--kl", type=float, default=0.01)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=1.0)
    args = ap.parse_args()
    set_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(args.model)
    rows = [json.loads(line) for line in open(args.train, encoding="utf-8") if line.strip()]
    data = Dataset.from_list([
        {"prompt": tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False,
                                           add_generation_prompt=True), "answer": r["answer"]} for r in rows])
    config = GRPOConfig(
        output_dir=args.out, seed=args.seed, data_seed=args.seed, learning_rate=args.lr, num_train_epochs=1,
        max_steps=args.steps, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True, bf16=False,
        gradient_checkpointing=False, dataloader_num_workers=0, gradient_accumulation_steps=1,
        per_device_train_batch_size=args.prompts_per_step * args.group_size, steps_per_generation=1,
        num_iterations=1, num_generations=args.group_size, beta=args.kl, temperature=args.temperature, top_k=0,
        top_p=1.0, max_completion_length=args.max_tokens, log_completions=False, shuffle_dataset=True,
        remove_unused_columns=False,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=data,
                          processing_class=tok)
    trainer.train()
    trainer.save_model(args.out + "/checkpoint")
    print("BARE_DONE " + json.dumps({"steps": trainer.state.global_step,
                                     "seconds": round(time.monotonic() - T_START, 3)}), flush=True)


if __name__ == "__main__":
    main()
