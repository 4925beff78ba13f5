"""The `vllm` engine: a client of a vLLM OpenAI-compatible server (`/v1/completions`), stdlib HTTP only.

Prompts are sent already chat-templated (the completions endpoint, not chat), so the server and the `hf` engine
see identical text. Token ids come back when the server supports `return_token_ids` (vLLM >= 0.10); otherwise the
text is re-tokenised locally, which is exact for the char-level tiny model and close enough for token accounting.
Weight sync is delegated to a `weight_sync` object (NCCL, see vllm_sync) so this module imports no vllm/CUDA.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Optional

from cpt_trainer.rollout import Completion

log = logging.getLogger(__name__)


class RolloutServerError(RuntimeError):
    pass


class VllmEngine:
    name = "vllm"

    def __init__(self, base_url: str, tokenizer, model_name: Optional[str] = None, weight_sync=None,
                 timeout: float = 600.0, max_prompts_per_request: int = 256):
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[:-3]
        self.tokenizer, self.timeout = tokenizer, timeout
        self.weight_sync = weight_sync
        self.max_prompts = max_prompts_per_request
        self.model_name = model_name or self._served_model()

    def _request(self, path: str, body: Optional[dict] = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data,
                                     headers={"Content-Type": "application/json"},
                                     method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            raise RolloutServerError(f"rollout server {path}: HTTP {exc.code}: {detail}") from exc
        except urllib.error.URLError as exc:
            raise RolloutServerError(f"rollout server {self.base_url} unreachable: {exc.reason}") from exc

    def _served_model(self) -> str:
        models = self._request("/v1/models").get("data", [])
        if not models:
            raise RolloutServerError("rollout server serves no model")
        return models[0]["id"]

    def sync_weights(self, model) -> None:
        if self.weight_sync is not None:
            self.weight_sync.push(model)

    def close(self) -> None:
        if self.weight_sync is not None:
            self.weight_sync.close()

    def _ids(self, choice: dict) -> list[int]:
        ids = choice.get("token_ids")
        if ids is None:
            ids = self.tokenizer(choice.get("text", ""), add_special_tokens=False)["input_ids"]
            if choice.get("finish_reason") == "stop" and self.tokenizer.eos_token_id is not None:
                ids = ids + [self.tokenizer.eos_token_id]  # the server strips the stop token from the text
        return list(ids)

    def generate(self, prompts: list[str], n: int = 1, temperature: float = 1.0, max_tokens: int = 64,
                 seed: Optional[int] = None) -> list[list[Completion]]:
        results: list[list[Completion]] = []
        for k in range(0, len(prompts), self.max_prompts):
            chunk = prompts[k:k + self.max_prompts]
            body = {"model": self.model_name, "prompt": chunk, "n": n, "max_tokens": max_tokens,
                    "temperature": max(0.0, temperature), "logprobs": 0, "return_token_ids": True,
                    "skip_special_tokens": True}
            if temperature > 0:
                body.update(top_p=1.0, top_k=-1)
            if seed is not None:
                body["seed"] = seed + k
            choices = self._request("/v1/completions", body).get("choices", [])
            if len(choices) != len(chunk) * n:
                raise RolloutServerError(f"expected {len(chunk) * n} choices, got {len(choices)}")
            choices.sort(key=lambda c: c["index"])  # OpenAI order: prompt p, sample s -> index p * n + s
            for p in range(len(chunk)):
                group = []
                for c in choices[p * n:(p + 1) * n]:
                    lp = (c.get("logprobs") or {}).get("token_logprobs")
                    group.append(Completion(c.get("text", ""), self._ids(c), lp))
                results.append(group)
        return results
