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

from cpt_core.protocol import progress
from cpt_core.results import KL_REFERENCES as KL_LABELS


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


CARRIED_KEY = "policy_kl"  # its entry in the counters a step checkpoint carries: points recorded before a resume


class KlCallback(TrainerCallback):
    """Estimates KL(reference || policy) against each probe every `every` optimizer steps and at the last one;
    train.json keeps, per reference, the points, the latest and the max (`policy_kl`). `carried` (the counters a
    step checkpoint saves) holds the points, so a resumed stage keeps those recorded before it stopped."""

    def __init__(self, probes: dict[str, KlProbe], every: int, carried: Optional[dict] = None, task_index: int = 0):
        self.probes, self.every, self.task_index = probes, every, task_index
        self.carried = carried if carried is not None else {}
        saved = self.carried.get(CARRIED_KEY) or {}
        self.points: dict[str, list[list[float]]] = {ref: [list(p) for p in saved.get(ref, [])] for ref in probes}
        self.carried[CARRIED_KEY] = self.points

    def _record(self, step: int, total: int, model) -> None:
        values: dict[int, Optional[float]] = {}
        for ref, probe in self.probes.items():
            if id(probe) not in values:  # task 1: base and task start are one probe, estimated once
                values[id(probe)] = probe.estimate(model)
            value, points = values[id(probe)], self.points[ref]
            if value is not None and (not points or points[-1][0] < step):
                points.append([step, round(value, 6)])
        self.carried[CARRIED_KEY] = {ref: [list(p) for p in pts] for ref, pts in self.points.items()}
        readings = self.readings()
        if readings:  # `cpt run` puts it on its exporter while the stage runs (cpt_policy_kl)
            progress("train", self.task_index, step, total, policy_kl=readings)

    def readings(self) -> dict:
        """{reference (status/label name): {last, max}}: what status and the gauges show."""
        return {KL_LABELS[ref]: {"last": pts[-1][1], "max": max(v for _, v in pts)}
                for ref, pts in self.points.items() if pts}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self._record(state.global_step, state.max_steps, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._record(state.global_step, state.max_steps, model)  # online RIF may end before max_steps; a no-op if recorded

    def stats(self) -> dict:
        series = {ref: {"points": pts, "last": pts[-1][1], "max": max(v for _, v in pts)}
                  for ref, pts in self.points.items() if pts}
        if not series:
            return {}
        prompts = max(len(p.sequences) for p in self.probes.values())
        return {"policy_kl": {"estimator": "k3", "prompts": prompts, **series}}
