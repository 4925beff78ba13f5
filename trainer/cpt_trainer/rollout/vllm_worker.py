"""Runs INSIDE the vLLM server's workers (`--worker-extension-cls`): receives weights from the learner.

Imported by vLLM, never by the trainer on a CPU machine.
"""

from __future__ import annotations

import torch


class WeightReceiver:
    """Mixed into vLLM's Worker: `self.device` and `self.model_runner` come from the worker."""

    def init_weight_update_group(self, master_address: str, master_port: int, rank_offset: int,
                                 world_size: int) -> None:
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.parallel_state import get_world_group
        from vllm.distributed.utils import StatelessProcessGroup

        rank = get_world_group().rank + rank_offset
        pg = StatelessProcessGroup.create(host=master_address, port=master_port, rank=rank,
                                          world_size=world_size)
        self._cpt_comm = PyNcclCommunicator(pg, device=self.device)

    def update_weight(self, name: str, dtype: str, shape: list[int]) -> None:
        weight = torch.empty(shape, dtype=getattr(torch, dtype), device="cuda")
        self._cpt_comm.broadcast(weight, src=0, stream=torch.cuda.current_stream())
        self.model_runner.model.load_weights(weights=[(name, weight)])
        del weight
