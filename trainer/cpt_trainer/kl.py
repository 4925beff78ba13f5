"""KL early warning: how far the policy has moved from a reference during a task (RL's Razor, arXiv 2509.04259:
forgetting tracks the KL from the base measured on the new task's own prompts).

At the start of the train stage, completions are sampled once from the reference (the model the task starts from)
on a fixed subset of the task's prompts, with their per-token log-probs under the reference. At an interval the
same tokens are scored under the current policy: forward passes only, no generation. The estimator of
KL(pi_ref || pi) is the per-token k3 of Schulman's note, k3 = r - 1 - log r with r = pi(y_t) / pi_ref(y_t), summed
over a completion's tokens and averaged over completions. Under y ~ pi_ref, E[r - 1] = 0 per token, so E[k3] is
the per-token KL and its sum over tokens is the sequence KL (chain rule); every term is >= 0 (lower variance than
the plain log-ratio, which can go negative).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from transformers import TrainerCallback


def k3(ref_logps: list[float], cur_logps: list[float]) -> float:
    """Sum over tokens of r - 1 - log r, r = exp(cur - ref): one completion's KL(ref || cur) estimate."""
    return sum(math.exp(c - r) - 1 - (c - r) for r, c in zip(ref_logps, cur_logps))


@torch.no_grad()
def token_logps(model, sequences: list[tuple[list[int], list[int]]]) -> list[list[float]]:
    """Per-token log-probs of each completion given its prompt (prompt ids, completion ids), one forward each."""
    out = []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for prompt, completion in sequences:
        ids = torch.tensor([prompt + completion], device=device)
        logits = model(ids).logits[0, len(prompt) - 1:-1].float()
        logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(prompt):, None])[:, 0]
        out.append(logps.tolist())
    if was_training:
        model.train()
    return out


class KlProbe:
    """Reference completions on a fixed prompt subset and their log-probs; `estimate(model)` is the mean k3."""

    def __init__(self, reference, tokenizer, prompts: list[str], max_tokens: int, seed: int):
        device = next(reference.parameters()).device
        self.sequences: list[tuple[list[int], list[int]]] = []
        with torch.random.fork_rng(devices=[]):  # training's own random stream is left as it was
            torch.manual_seed(seed)
            self._sample(reference, tokenizer, prompts, max_tokens, device)
        self.ref = token_logps(reference, self.sequences)

    def _sample(self, reference, tokenizer, prompts, max_tokens, device) -> None:
        for text in prompts:
            ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
            with torch.no_grad():
                gen = reference.generate(ids, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                         max_new_tokens=max_tokens, pad_token_id=tokenizer.pad_token_id)
            completion = gen[0, ids.shape[1]:].tolist()
            if completion:
                self.sequences.append((ids[0].tolist(), completion))

    def estimate(self, model) -> Optional[float]:
        if not self.sequences:
            return None
        cur = token_logps(model, self.sequences)
        return sum(k3(r, c) for r, c in zip(self.ref, cur)) / len(cur)


class KlCallback(TrainerCallback):
    """Estimates KL(task start || policy) every `every` optimizer steps and at the last one; train.json keeps the
    points, the latest and the max (`policy_kl`)."""

    def __init__(self, probe: KlProbe, every: int):
        self.probe, self.every = probe, every
        self.points: list[list[float]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            value = self.probe.estimate(model)
            if value is not None:
                self.points.append([state.global_step, round(value, 6)])

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if not self.points or self.points[-1][0] != state.global_step:  # online RIF may end before max_steps
            value = self.probe.estimate(model)
            if value is not None:
                self.points.append([state.global_step, round(value, 6)])

    def stats(self) -> dict:
        if not self.points:
            return {}
        values = [v for _, v in self.points]
        return {"policy_kl": {"reference": "task_start", "estimator": "k3", "prompts": len(self.probe.sequences),
                              "points": self.points, "last": values[-1], "max": max(values)}}
