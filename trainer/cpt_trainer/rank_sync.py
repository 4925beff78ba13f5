"""What step checkpoints need from the learner's ranks when there are several (DeepSpeed, `learner.replicas > 1`):
one decision (save now? resume from which step checkpoint?) taken by rank 0 and followed by all, a barrier before
step.json is written, and which files of a step checkpoint each rank needs (docs/checkpoints.md).

The ranks agree through two gloo process groups of their own, never the learner's default group: the upload
runs in a background thread while the main thread trains, and two threads must not share a group (their
collectives would interleave in different orders on different ranks). One group serves the main thread (the
time trigger, the resume choice), the other the upload thread (the barrier before the commit). gloo works on CPU
and beside NCCL on GPUs, and carries small Python objects only; the checkpoint bytes go through storage.

The default group is created here when the stage needs it before the Trainer does (the resume choice comes
first); accelerate and DeepSpeed reuse an initialised one.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

import torch
import torch.distributed as dist

# DeepSpeed's and HF Trainer's per-rank file names: ZeRO optimizer shards (zero_pp_rank_<r>_mp_rank_00_optim_states.pt,
# bf16_zero_pp_rank_<r>_... with bf16) and RNG states (rng_state_<r>.pth). Every other file of a step checkpoint
# (model states, `latest`, trainer_state.json, scheduler, tokenizer) is written by rank 0 and read by all.
_PER_RANK = re.compile(r"(?:^|/)(?:bf16_)?(?:zero_pp_rank_|rng_state_)(\d+)[_.]")


def rank_of(key: str) -> Optional[int]:
    """The rank a file of a step checkpoint belongs to, or None for a file every rank reads."""
    found = _PER_RANK.search(key)
    return int(found.group(1)) if found else None


def wanted_by(rank: int):
    """The files rank `rank` downloads on resume: the shared ones and its own (not the other ranks' shards:
    ZeRO-1/2 loads only its own partition unless the checkpoint is elastic, which ours is not)."""
    return lambda f: rank_of(f["key"]) in (None, rank)


class RankSync:
    """rank, world size and the two agreement groups of one multi-rank train stage."""

    def __init__(self) -> None:
        if not dist.is_initialized():  # the same group accelerate would create a moment later
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self._main = dist.new_group(backend="gloo")
        self._upload = dist.new_group(backend="gloo")

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (main thread)."""
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self._main)
        return box[0]

    def gather(self, obj: Any, upload: bool = False) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank; also a barrier. `upload`: from the upload thread."""
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj, group=self._upload if upload else self._main)
        return out
