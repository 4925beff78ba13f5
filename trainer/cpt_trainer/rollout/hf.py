"""The `hf` engine: transformers `generate` in the learner process, batched, left-padded.

It shares the learner's model object, so weight sync is a no-op. Sampling is seeded per call so RIF and
evaluation are deterministic given the spec's seed.
"""

from __future__ import annotations

from typing import Optional

import torch

from cpt_trainer.rollout import Completion


class HfEngine:
    name = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 256):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def sync_weights(self, model, step=None) -> None:
        self.model = model

    def close(self) -> None:
        pass

    def _trim(self, ids: list[int]) -> list[int]:
        """Completion tokens up to and including EOS; padding after it is not part of the rollout."""
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        out = []
        for t in ids:
            if t == pad and t != eos:
                break
            out.append(t)
            if t == eos:
                break
        return out

    @torch.no_grad()
    def generate(self, prompts: list[str], n: int = 1, temperature: float = 1.0, max_tokens: int = 64,
                 seed: Optional[int] = None) -> list[list[Completion]]:
        if seed is not None:
            torch.manual_seed(seed)
        greedy = temperature <= 0
        per_batch = max(1, self.batch_size // max(1, n))
        was_training = self.model.training
        self.model.eval()
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        results: list[list[Completion]] = []
        try:
            for k in range(0, len(prompts), per_batch):
                chunk = prompts[k:k + per_batch]
                enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
                enc = {key: v.to(self.model.device) for key, v in enc.items()}
                kwargs = dict(max_new_tokens=max_tokens, num_return_sequences=n,
                              pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
                if greedy:
                    kwargs.update(do_sample=False)
                else:
                    kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
                out = self.model.generate(**enc, **kwargs)
                gen = out[:, enc["input_ids"].shape[1]:].tolist()
                for p in range(len(chunk)):
                    group = []
                    for ids in gen[p * n:(p + 1) * n]:
                        ids = self._trim(ids)
                        group.append(Completion(self.tokenizer.decode(ids, skip_special_tokens=True), ids))
                    results.append(group)
        finally:
            self.tokenizer.padding_side = side
            if was_training:
                self.model.train()
        return results
