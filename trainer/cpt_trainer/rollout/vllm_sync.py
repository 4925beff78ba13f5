"""Learner -> vLLM server weight sync over NCCL (GPU only; imports vllm lazily).

The pattern of vLLM's RLHF example: the server runs with
`--worker-extension-cls cpt_trainer.rollout.vllm_worker.WeightReceiver` (and VLLM_SERVER_DEV_MODE=1, which
exposes POST /collective_rpc). The learner (rank 0 of the group) creates a StatelessProcessGroup with the
server's workers (ranks 1..tp), then for every parameter asks the workers over HTTP to receive a tensor of that
name/dtype/shape and broadcasts it with PyNccl. Only rank 0 of the learner pushes; other learner ranks skip.
"""

from __future__ import annotations

import json
import os
import threading
import urllib.parse
import urllib.request

WORKER_EXTENSION = "cpt_trainer.rollout.vllm_worker.WeightReceiver"


class NcclWeightSync:
    def __init__(self, base_url: str, port: int = 51216, tensor_parallel: int = 1, timeout: float = 600.0):
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.port, self.tp, self.timeout = port, tensor_parallel, timeout
        self.comm = None

    def _rpc(self, method: str, *args) -> dict:
        body = json.dumps({"method": method, "args": list(args), "timeout": self.timeout}).encode()
        req = urllib.request.Request(self.base_url + "/collective_rpc", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read() or b"{}")

    def _rpc_async(self, method: str, *args) -> threading.Thread:
        """Workers block in the collective until the learner joins: call them from a thread."""
        t = threading.Thread(target=self._rpc, args=(method, *args), daemon=True)
        t.start()
        return t

    def _connect(self) -> None:
        import torch
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        host = os.environ.get("CPT_LEARNER_ADDRESS") or os.environ.get("POD_IP") or "127.0.0.1"
        world = 1 + self.tp
        t = self._rpc_async("init_weight_update_group", host, self.port, 1, world)
        pg = StatelessProcessGroup.create(host=host, port=self.port, rank=0, world_size=world)
        self.comm = PyNcclCommunicator(pg, device=torch.device("cuda", torch.cuda.current_device()))
        t.join(self.timeout)

    def push(self, model) -> None:
        """Broadcast every parameter to the server's workers, then reset their prefix cache."""
        if int(os.environ.get("RANK", "0")) != 0:
            return
        import torch

        if self.comm is None:
            self._connect()
        for name, param in model.state_dict().items():
            t = self._rpc_async("update_weight", name, str(param.dtype).removeprefix("torch."),
                                list(param.shape))
            self.comm.broadcast(param.detach().to("cuda").contiguous(), src=0,
                                stream=torch.cuda.current_stream())
            t.join(self.timeout)
        req = urllib.request.Request(self.base_url + "/reset_prefix_cache", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=self.timeout).close()

    def close(self) -> None:
        self.comm = None
