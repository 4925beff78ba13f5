"""Online RIF: GRPO's own groups decide which prompts are worth rolling out again (GRESO's rule, arXiv 2506.02177).

A prompt whose group of G completions got equal rewards (0 of G or G of G correct: no policy gradient) is skipped
in later epochs of the task, rolled out again with probability max(reprobe^z, floor) after z such visits in a row,
and batches are refilled from the prompts that come next, so every learner step is a full batch and a skipped
prompt costs no rollouts. The first visit of every prompt is never skipped (nothing is known about it yet).

`OnlineRif` is the per-prompt record (what a step checkpoint carries) and the stream of prompt indices a sampler
yields. It is deterministic in (seed, records): the draw for prompt r in logical epoch e is a hash of (seed, e, r),
and a decision made while filling batch b reads only observations of batches <= b - 2, because the dataloader
fetches one batch ahead of the step being trained; a resumed run therefore makes the same decisions as an
uninterrupted one. The consumed list (prompt indices of trained steps, in order) lets a resumed sampler replay the
batches the Trainer skips and find its place in the stream.
"""

from __future__ import annotations

import random
from typing import Any, Iterator, Optional

import torch

CARRIED_KEY = "online_rif"  # its entry in the counters a step checkpoint carries


class OnlineRif:
    def __init__(self, num_prompts: int, batch: int, epochs: int, seed: int, reprobe: float, floor: float,
                 max_prompts: Optional[int] = None, state: Optional[dict] = None,
                 epoch_batches: Optional[int] = None):
        if num_prompts < batch:
            raise ValueError(f"{num_prompts} prompts are fewer than one batch of {batch}")
        self.n, self.batch, self.epochs, self.seed = num_prompts, batch, epochs, seed
        self.reprobe, self.floor = reprobe, floor
        # Prompts the stream yields at most: GRPO's own count (floor(N/B) full batches per epoch; `epoch_batches`
        # when replay takes some of each batch's slots, so the step count stays GRPO's), or maxSteps' (capped:
        # epochs go on until that many were taken, as GRPO's would).
        self.capped = max_prompts is not None
        per_epoch = num_prompts // batch if epoch_batches is None else epoch_batches
        self.max_prompts = max_prompts if self.capped else epochs * per_epoch * batch
        state = state or {}
        # per prompt: [[batch index, zero variance 0/1, correct count], ...] in visit order
        self.history: dict[int, list[list[int]]] = {int(k): [list(v) for v in h]
                                                    for k, h in (state.get("history") or {}).items()}
        self.consumed: list[int] = list(state.get("consumed") or [])
        # per batch index: [skipped, re-probed] decisions made while filling it
        self.decisions: dict[int, list[int]] = {int(k): list(v) for k, v in (state.get("decisions") or {}).items()}

    # ----------------------------------------------------------------------------------------- decisions

    def streak(self, row: int, before_batch: int) -> int:
        """Zero-variance visits in a row at the end of `row`'s history, counting batches < before_batch - 1."""
        z = 0
        for b, zero, _ in reversed(self.history.get(row, [])):
            if b > before_batch - 2:
                continue
            if not zero:
                break
            z += 1
        return z

    def take_probability(self, z: int) -> float:
        return 1.0 if z == 0 else max(self.reprobe ** z, self.floor)

    def draw(self, epoch: int, row: int) -> float:
        return random.Random(f"{self.seed}:{epoch}:{row}").random()

    def order(self, epoch: int) -> list[int]:
        """Epoch e's permutation, a function of (seed, e) alone."""
        g = torch.Generator()
        g.manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def stream(self) -> Iterator[int]:
        """Prompt indices in training order, batch after batch: first the consumed ones (a resumed Trainer skips
        those batches), then new decisions. Ends after max_prompts, after the last epoch (uncapped), or after an
        epoch that took none; the sampler drops a last partial batch, so every step is full."""
        replay, pos = list(self.consumed), 0  # a copy: observe() appends to consumed meanwhile
        taken = 0
        epoch = 0
        while taken < self.max_prompts:
            took_any = False
            for row in self.order(epoch):
                if taken >= self.max_prompts:
                    return
                if epoch >= self.epochs and not self.capped:
                    return
                if pos < len(replay):  # replaying: a row of this epoch not next in the consumed list was skipped
                    if replay[pos] != row:
                        continue
                    pos += 1
                elif not self._decide(epoch, row, taken // self.batch):
                    continue
                took_any = True
                taken += 1
                yield row
            epoch += 1
            if not took_any:
                return

    def _decide(self, epoch: int, row: int, batch_index: int) -> bool:
        z = self.streak(row, batch_index)
        if z == 0:
            return True
        took = self.draw(epoch, row) < self.take_probability(z)
        self.decisions.setdefault(batch_index, [0, 0])[int(took)] += 1
        return took

    # ------------------------------------------------------------------------------------- observations

    def observe(self, rows: list[int], rewards: list[float], group: int, batch_index: int,
                correct: list[bool]) -> None:
        """One step's groups (G consecutive entries per prompt, in the sampler's order)."""
        for k in range(0, len(rows), group):
            row = int(rows[k])
            if row >= self.n:  # a replayed prompt (spec.replay): not the task's, no record
                continue
            values = rewards[k:k + group]
            zero = int(max(values) - min(values) <= 1e-6)
            self.history.setdefault(row, []).append([batch_index, zero, int(sum(correct[k:k + group]))])
            self.consumed.append(row)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy for step checkpoints (never mutated afterwards: an upload thread may be reading it)."""
        done = len(self.consumed) // self.batch  # batches trained; decisions for later ones are redone on resume
        return {"history": {str(k): [list(v) for v in h] for k, h in self.history.items()},
                "consumed": list(self.consumed),
                "decisions": {str(b): list(v) for b, v in self.decisions.items() if b < done}}

    @property
    def skips(self) -> int:
        return sum(v[0] for v in self.decisions.values())

    @property
    def reprobes(self) -> int:
        return sum(v[1] for v in self.decisions.values())

    def stats(self, group: int) -> dict[str, Any]:
        """train.json's online_rif entry. dropped: prompts whose latest group had equal rewards (what the next
        epoch would skip), kept: the others; never visited prompts count as kept."""
        last_zero = sum(1 for h in self.history.values() if h and h[-1][1])
        returned = sum(1 for h in self.history.values()
                       if any(a[1] and not b[1] for a, b in zip(h, h[1:])))
        zero_groups = sum(v[1] for h in self.history.values() for v in h)
        return {"mode": "online", "total": self.n, "kept": self.n - last_zero, "dropped": last_zero,
                "filtered_fraction": round(last_zero / self.n, 6), "groups": len(self.consumed),
                "zero_variance_groups": zero_groups, "skipped_groups": self.skips, "reprobed_groups": self.reprobes,
                "returned_prompts": returned,
                # against GRPO's E x floor(P/B) x B groups; with maxSteps both take the same number of steps
                "rollouts_saved": 0 if self.capped else max(0, self.max_prompts - len(self.consumed)) * group}
