"""The rollout-server contract: how a vLLM server of a run is started and how the learner reaches it.

Both executors start servers from this: `cpt run` as local processes (cpt_operator.local.rollout_server), the
Kubernetes executor as a Deployment (cpt_operator.kube.manifests); the trainer's plugins and weight sync read
the same names. One declaration, so what the tests run is what a cluster runs.
"""

from __future__ import annotations

import json
import secrets
from typing import Optional

# Entry points of cpt_trainer.rollout.vllm_plugin (pyproject.toml): the gloo weight-transfer backend and vLLM's
# own weight-sync routes without vLLM's dev mode (which would also open its any-worker-method RPC route).
PLUGINS = "cpt_gloo,cpt_weight_sync"
SERVED_MODEL = "policy"
# The run's key, from its Secret on a cluster: vLLM's --api-key guards /v1 (VLLM_API_KEY), the weight-sync routes
# plugin checks CPT_WEIGHT_SYNC_TOKEN, and the learner sends CPT_ROLLOUT_API_KEY.
KEY_ENV = ("VLLM_API_KEY", "CPT_WEIGHT_SYNC_TOKEN", "CPT_ROLLOUT_API_KEY")
SERVER_KEY_ENV = KEY_ENV[:2]  # what a server reads its key from
CLIENT_KEY_ENV = KEY_ENV[1:]  # what the learner sends: CPT_ROLLOUT_API_KEY on /v1, the token on weight sync
WEIGHT_SYNC_PORT = 29600  # the learner's weight-transfer rendezvous on a cluster (a fixed port a policy can name)


def server_args(model: str, port: int, backend: str, host: str = "127.0.0.1",
                max_model_len: Optional[int] = None, tensor_parallel: int = 1) -> list[str]:
    """vLLM server arguments after the model (`vllm serve MODEL ...`, or `--model MODEL` for the api_server
    module). On the CPU build (gloo): fp32 (bf16 is ~6x slower there) and no graph compilation."""
    args = ["--served-model-name", SERVED_MODEL, "--host", host, "--port", str(port),
            "--weight-transfer-config", json.dumps({"backend": backend})]
    if tensor_parallel > 1:
        args += ["--tensor-parallel-size", str(tensor_parallel)]
    if max_model_len:
        args += ["--max-model-len", str(max_model_len)]
    if backend == "gloo":
        args += ["--dtype", "float32", "--enforce-eager"]
    return args


def new_key() -> str:
    """A fresh rollout key: 256 random bits, URL-safe (a Bearer token). On a cluster the operator makes one per run
    (kube.manifests.with_key); `cpt run` makes one per invocation, so a local server is never open either."""
    return secrets.token_urlsafe(32)


def server_key_env(key: str) -> dict[str, str]:
    """The environment a rollout server needs to require `key` (vLLM's --api-key and the weight-sync routes)."""
    return {name: key for name in SERVER_KEY_ENV}


def client_key_env(key: str) -> dict[str, str]:
    """The environment a learner needs to reach servers that require `key`."""
    return {name: key for name in CLIENT_KEY_ENV}
