"""A `gloo` weight-transfer backend for vLLM's native weight-sync API, so CPU runs take the same code path as GPU.

vLLM 0.32 ships trainer->server weight transfer (`/init_weight_transfer_engine`, `/start_weight_update`,
`/update_weights`, `/finish_weight_update`) with NCCL-only backends. This module is the one missing piece for a
CPU machine: a worker-side `WeightTransferEngine` and a trainer-side `TrainerWeightTransferEngine` that move the
same packed uint8 chunks over a stateless torch gloo process group (vLLM's own helper, so the vLLM workers'
default group is untouched). Both are registered under the name `gloo` by `cpt_trainer.rollout.vllm_plugin`,
which vLLM loads in every server process through the `vllm.general_plugins` entry point.

Imported by vLLM server processes and by the learner when it talks to a vLLM server; needs vllm installed.
"""

from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import ClassVar

import torch
from vllm.distributed.utils import (stateless_destroy_torch_distributed_process_group,
                                    stateless_init_torch_distributed_process_group)
from vllm.distributed.weight_transfer.base import (TrainerInitInfo, TrainerWeightTransferEngine, WeightTransferEngine,
                                                   WeightTransferInitInfo, WeightTransferUpdateInfo)
from vllm.distributed.weight_transfer.packed_tensor import unpack_tensor

BACKEND = "gloo"
DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024  # per gloo broadcast; bounds the extra memory a sync needs on both sides


def timeout() -> timedelta:
    """How long a broadcast waits for a peer (a dead server must fail the stage, not hang it)."""
    return timedelta(seconds=float(os.environ.get("CPT_WEIGHT_SYNC_TIMEOUT", "300")))


def plan_chunks(nbytes: list[int], chunk_bytes: int) -> list[list[int]]:
    """Indices per chunk: tensors are added until a chunk exceeds `chunk_bytes` (vLLM's pack_tensors rule).
    Sender and receivers both derive the split from the same metadata, so they always agree."""
    chunks: list[list[int]] = []
    cur: list[int] = []
    size = 0
    for i, n in enumerate(nbytes):
        cur.append(i)
        size += n
        if size > chunk_bytes:
            chunks.append(cur)
            cur, size = [], 0
    if cur:
        chunks.append(cur)
    return chunks


def _nbytes(shape, dtype: torch.dtype) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n * torch.empty((), dtype=dtype).element_size()


def _broadcast(group, tensor: torch.Tensor) -> None:
    """Broadcast from group rank 0 on the ProcessGroup object itself (group ranks, not global ranks)."""
    opts = torch.distributed.BroadcastOptions()
    opts.rootRank = 0
    group.broadcast([tensor], opts).wait()


# ------------------------------------------------------------------------------------------------ server side

def refresh_tied_kernels(model) -> None:
    """Re-derive the kernels of layers whose weight is tied to another layer's (lm_head = embed_tokens).

    vLLM's layerwise reload (its NCCL engine's path too) gets no checkpoint tensor for a tied lm_head, so it puts
    the layer's old kernel tensors back ("ParallelLMHead: Failed to load weights" in the server log). On GPU
    the shared weight is all there is; on CPU the layer also holds a pre-packed GEMM weight made from the OLD
    values, and the server's greedy completions stopped matching the learner's. Re-running the layer's
    `process_weights_after_loading` re-packs it from the (new) shared weight.
    """
    by_storage: dict[int, list] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and hasattr(module, "quant_method") and not weight.is_meta:
            by_storage.setdefault(weight.data_ptr(), []).append(module)
    for modules in by_storage.values():
        if len(modules) > 1:
            for module in modules:
                module.quant_method.process_weights_after_loading(module)


@dataclass
class GlooWeightTransferInitInfo(WeightTransferInitInfo):
    master_address: str
    master_port: int
    rank_offset: int
    world_size: int
    chunk_bytes: int = DEFAULT_CHUNK_BYTES


@dataclass
class GlooWeightTransferUpdateInfo(WeightTransferUpdateInfo):
    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]


class GlooWeightTransferEngine(WeightTransferEngine[GlooWeightTransferInitInfo, GlooWeightTransferUpdateInfo]):
    """Runs inside each vLLM worker: joins the trainer's gloo group and loads the received chunks."""

    init_info_cls = GlooWeightTransferInitInfo
    update_info_cls = GlooWeightTransferUpdateInfo

    def __init__(self, config, vllm_config, device, model) -> None:
        super().__init__(config, vllm_config, device, model)
        self.group = None
        self.chunk_bytes = DEFAULT_CHUNK_BYTES

    def init_transfer_engine(self, init_info: GlooWeightTransferInitInfo) -> None:
        pc = self.parallel_config  # unique rank across data-parallel groups, as vLLM's NCCL engine computes it
        rank = pc.data_parallel_index * pc.world_size + pc.rank + init_info.rank_offset
        self.shutdown()  # a new learner (the next stage) replaces the previous one's group
        self.chunk_bytes = init_info.chunk_bytes
        self.group = stateless_init_torch_distributed_process_group(
            init_info.master_address, init_info.master_port, rank, init_info.world_size, backend="gloo",
            timeout=timeout())

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)
        refresh_tied_kernels(self.model)

    def update_weights(self, update_info: dict) -> None:
        # The base class ends with torch.accelerator.synchronize(), which has nothing to wait for on CPU.
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info: GlooWeightTransferUpdateInfo) -> None:
        if self.group is None:
            raise RuntimeError("gloo weight transfer not initialized: call /init_weight_transfer_engine first")
        dtypes = [getattr(torch, d) for d in update_info.dtype_names]
        sizes = [_nbytes(s, d) for s, d in zip(update_info.shapes, dtypes)]
        for idx in plan_chunks(sizes, self.chunk_bytes):
            buf = torch.empty(sum(sizes[i] for i in idx), dtype=torch.uint8)
            _broadcast(self.group, buf)
            self.model.load_weights(unpack_tensor(buf, [update_info.names[i] for i in idx],
                                                  [update_info.shapes[i] for i in idx], [dtypes[i] for i in idx],
                                                  [sizes[i] for i in idx]))

    def shutdown(self) -> None:
        if self.group is not None:
            stateless_destroy_torch_distributed_process_group(self.group)
            self.group = None


# ------------------------------------------------------------------------------------------------ learner side

@dataclass
class GlooTrainerInitInfo(TrainerInitInfo):
    backend: ClassVar[str] = BACKEND

    master_address: str
    master_port: int
    world_size: int
    chunk_bytes: int = DEFAULT_CHUNK_BYTES


class GlooTrainerWeightTransferEngine(TrainerWeightTransferEngine[GlooTrainerInitInfo]):
    """Learner side: rank 0 of the gloo group; drives the HTTP round trip through the `client` like vLLM's
    NCCL trainer engine (update_weights runs concurrently with the broadcast both sides block in)."""

    init_info_cls = GlooTrainerInitInfo

    def __init__(self, *, client, source, is_sender: bool = True, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        super().__init__(client=client, source=source, is_sender=is_sender)
        self.chunk_bytes = chunk_bytes
        self.group = None

    @classmethod
    def trainer_init(cls, init_info: GlooTrainerInitInfo, *, client, source=None):
        if source is None:
            raise ValueError("gloo trainer weight transfer requires a WeightSource")
        engine = cls(client=client, source=source, is_sender=init_info.is_sender, chunk_bytes=init_info.chunk_bytes)
        if not engine.is_sender:
            return engine
        worker_info = GlooWeightTransferInitInfo(init_info.master_address, init_info.master_port, 1,
                                                 init_info.world_size, init_info.chunk_bytes)
        with ThreadPoolExecutor(max_workers=1) as exe:  # workers block in the rendezvous until rank 0 joins
            future = exe.submit(client.init_weight_transfer_engine, asdict(worker_info))
            try:
                # rank 0 hosts the store on a socket it binds itself: torch's tcp:// rendezvous would make it a
                # client of torchrun's agent store when the learner runs under torchrun (TORCHELASTIC_USE_AGENT_STORE)
                listen = socket.create_server((init_info.master_address, init_info.master_port), reuse_port=False)
                engine.group = stateless_init_torch_distributed_process_group(
                    init_info.master_address, init_info.master_port, 0, init_info.world_size, backend="gloo",
                    timeout=timeout(), listen_socket=listen)
            except BaseException:
                if future.done():
                    future.result()  # the server's refusal explains the failed rendezvous better
                raise
            future.result()
        return engine

    def send_weights(self) -> None:
        meta = self.source.metadata()
        if not self.is_sender:
            for _ in self.source:  # stay in the learner-side gather collective (ZeRO-3 / FSDP)
                pass
            return
        update_info = GlooWeightTransferUpdateInfo([m.name for m in meta],
                                                   [str(m.dtype).removeprefix("torch.") for m in meta],
                                                   [list(m.shape) for m in meta])
        self.client.start_weight_update()
        exe = ThreadPoolExecutor(max_workers=1)
        try:
            future = exe.submit(self.client.update_weights, asdict(update_info))
            self._broadcast(meta)
            future.result()
        finally:
            exe.shutdown(wait=False)  # a failed broadcast leaves the request thread blocked: do not join it
        self.client.finish_weight_update()

    def _broadcast(self, meta) -> None:
        sizes = [_nbytes(m.shape, m.dtype) for m in meta]
        pairs = iter(self.source)
        for idx in plan_chunks(sizes, self.chunk_bytes):
            parts = []
            for i in idx:
                name, tensor = next(pairs)
                if name != meta[i].name or tuple(tensor.shape) != tuple(meta[i].shape):
                    raise ValueError(f"weight source yielded {name!r} {tuple(tensor.shape)}, "
                                     f"metadata declared {meta[i].name!r} {tuple(meta[i].shape)}")
                parts.append(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8))
            _broadcast(self.group, torch.cat(parts))

    def shutdown(self) -> None:
        if self.group is not None:
            stateless_destroy_torch_distributed_process_group(self.group)
            self.group = None
