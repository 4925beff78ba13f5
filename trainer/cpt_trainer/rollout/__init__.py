"""Rollout engines: one interface for RIF, GRPO and evaluation.

`hf` generates with transformers inside the learner process; `vllm` is a client of one or more vLLM
OpenAI-compatible servers (weights pushed from the learner through vLLM's weight-transfer API, see weight_sync).
`make_engine` picks one from the spec and falls back to `hf` with a logged reason when there is no server URL or
no vllm package to sync weights with.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Optional, Protocol

log = logging.getLogger(__name__)


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    logprobs: Optional[list[float]] = None

    @property
    def tokens(self) -> int:
        return len(self.token_ids)


class Engine(Protocol):
    """Generates completions for text prompts (already chat-templated)."""

    name: str

    def generate(self, prompts: list[str], n: int = 1, temperature: float = 1.0, max_tokens: int = 64,
                 seed: Optional[int] = None) -> list[list[Completion]]:
        """n completions per prompt; temperature 0 means greedy (then n should be 1)."""
        ...

    def sync_weights(self, model, step: Optional[int] = None) -> None:
        """Make the engine generate with `model`'s current weights, the policy of learner step `step`."""
        ...

    def close(self) -> None:
        ...


def vllm_unavailable_reason(rollout_url: Optional[str]) -> Optional[str]:
    """Why the vllm engine cannot be used here, or None when it can."""
    if not rollout_url:
        return "no rollout server URL in the stage config"
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (the learner needs it for weight sync)"
    return None


def rollout_endpoints(rollout_url: str) -> list[str]:
    """Every replica's base URL, so each replica is synced and rollouts are spread over all of them (a Service's
    one virtual IP would hide all but one). `rollout_url` is a comma-separated list of endpoints; an entry
    `dns+http://HOST:PORT` (a headless Service) stands for every IPv4 address HOST resolves to (its ready pods)."""
    import socket
    import urllib.parse

    out: list[str] = []
    for url in (u.strip().rstrip("/").removesuffix("/v1") for u in rollout_url.split(",")):
        if not url.startswith("dns+"):
            out += [url] if url else []
            continue
        parts = urllib.parse.urlsplit(url[len("dns+"):])
        port = parts.port or 80
        infos = socket.getaddrinfo(parts.hostname, port, socket.AF_INET, socket.SOCK_STREAM)
        out += sorted({f"{parts.scheme}://{info[4][0]}:{port}" for info in infos})
    return out


def make_engine(engine: str, model, tokenizer, rollout_url: Optional[str] = None, tensor_parallel: int = 1,
                batch_size: int = 256) -> Engine:
    """The engine the spec asks for, or `hf` with a logged reason when that cannot work here. A `vllm` engine
    pushes `model`'s weights to every server before it returns (a server may have started from older ones)."""
    from cpt_trainer.rollout.hf import HfEngine

    if engine == "vllm":
        reason = vllm_unavailable_reason(rollout_url)
        if reason is None:
            from cpt_trainer.rollout.vllm import VllmEngine
            from cpt_trainer.rollout.weight_sync import WeightSync

            endpoints = rollout_endpoints(rollout_url)
            sync = WeightSync(endpoints, resolve=lambda: rollout_endpoints(rollout_url))
            eng = VllmEngine(endpoints, tokenizer, weight_sync=sync)
            eng.sync_weights(model)
            return eng
        log.warning("rollout engine vllm unavailable (%s); falling back to hf", reason)
    elif engine != "hf":
        raise ValueError(f"unknown rollout engine {engine!r}")
    return HfEngine(model, tokenizer, batch_size=batch_size)
