"""The vllm engine against a fake OpenAI-compatible server on 127.0.0.1 (no vLLM, no GPU needed)."""

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cpt_trainer import synthetic
from cpt_trainer.evaluate import accuracy
from cpt_core.api import GrpoSpec
from cpt_core.rewards import load_reward
from cpt_trainer.rif import run_rif
from cpt_trainer.rollout import make_engine
from cpt_trainer.rollout.vllm import RolloutServerError, VllmEngine
from cpt_core.tasks import Task, prompt_text
from cpt_trainer.tinymodel import build_tokenizer


class FakeServer:
    """Answers `rev WORD` prompts: sample 0 correct, the others wrong; greedy (temperature 0) always correct."""

    def __init__(self, token_ids=True):
        self.requests, self.token_ids, self.fail, self.auth = [], token_ids, False, []
        self.cut = False  # answer with a body shorter than its Content-Length, then close (a server killed mid-reply)
        self.tok = build_tokenizer()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if outer.cut and self.path == "/weight_info":  # killed while telling its weight label
                    self.send_response(200)
                    self.send_header("Content-Length", "35")
                    self.end_headers()
                    self.close_connection = True
                    return
                if self.path == "/v1/models":
                    return self._send(200, {"object": "list", "data": [{"id": "tiny", "object": "model"}]})
                self._send(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body))
                outer.auth.append(self.headers.get("Authorization"))
                if outer.fail:
                    return self._send(500, {"error": "boom"})
                if outer.cut:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "9502")
                    self.end_headers()
                    self.wfile.write(b'{"choices": [')
                    self.close_connection = True
                    return
                if self.path != "/v1/completions":
                    return self._send(404, {"error": "not found"})
                prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
                choices = []
                for p, prompt in enumerate(prompts):
                    word = prompt.split("rev ")[-1].split("<")[0]
                    for s in range(body.get("n", 1)):
                        good = body["temperature"] == 0 or s == 0
                        text = "\\boxed{" + (word[::-1] if good else word) + "}"
                        c = {"index": p * body.get("n", 1) + s, "text": text, "finish_reason": "stop",
                             "logprobs": {"token_logprobs": [-0.5] * len(text)}}
                        if outer.token_ids:
                            c["token_ids"] = outer.tok(text, add_special_tokens=False)["input_ids"] + [2]
                        choices.append(c)
                choices.reverse()  # the client must order by index
                n_tok = sum(len(c["text"]) for c in choices)
                self._send(200, {"id": "cmpl-1", "object": "text_completion", "model": body["model"],
                                 "choices": choices, "usage": {"completion_tokens": n_tok}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


def _task(n=6):
    return Task("reverse", synthetic.generate("reverse", n, pool="eval"), load_reward("exact"))


def test_generate_groups_in_order(server):
    tok = build_tokenizer()
    eng = VllmEngine(server.url, tok, max_prompts_per_request=4)
    prompts = [prompt_text(tok, r["prompt"]) for r in _task().rows]
    groups = eng.generate(prompts, n=3, temperature=1.0, max_tokens=16, seed=7)
    assert len(groups) == 6 and all(len(g) == 3 for g in groups)
    word = _task().rows[0]["prompt"].split()[-1]
    assert groups[0][0].text == "\\boxed{" + word[::-1] + "}" and groups[0][1].text == "\\boxed{" + word + "}"
    assert groups[0][0].token_ids[-1] == tok.eos_token_id and groups[0][0].logprobs[0] == -0.5
    paths = [p for p, _ in server.requests]
    assert paths == ["/v1/completions", "/v1/completions"]  # 6 prompts in chunks of 4
    body = next(b for _, b in server.requests if len(b["prompt"]) == 4)
    assert body["model"] == "tiny" and body["n"] == 3 and body["max_tokens"] == 16
    assert "seed" not in body  # see cpt_trainer.rollout.vllm: vLLM seeds a request's prompts alike
    assert body["prompt"][0].startswith("<|user|>rev ") and body["prompt"][0].endswith("<|assistant|>")


def test_rif_and_eval_through_vllm(server):
    tok = build_tokenizer()
    eng = VllmEngine(server.url, tok)
    res = run_rif(eng, tok, _task(), rollouts=4, min_correct=1, temperature=1.0, max_tokens=64)
    assert res.kept == 6 and res.mean_correct == pytest.approx(0.25) and res.rollout_tokens > 0
    strict = run_rif(eng, tok, _task(), rollouts=4, min_correct=2, temperature=1.0, max_tokens=64)
    assert strict.kept == 0
    acc, _ = accuracy(eng, tok, _task())
    assert acc == 1.0 and server.requests[-1][1]["temperature"] == 0.0


def test_token_ids_fallback_and_errors():
    s = FakeServer(token_ids=False)
    try:
        tok = build_tokenizer()
        eng = VllmEngine(s.url, tok)
        g = eng.generate(["<|user|>rev abc<|assistant|>"], n=1, temperature=0)
        assert g[0][0].token_ids == tok("\\boxed{cba}", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        s.fail = True
        with pytest.raises(RolloutServerError, match="HTTP 500"):
            eng.generate(["x"], n=1)
        s.fail, s.cut = False, True  # a reply cut short is a server fault the fleet recovers from, not a crash
        with pytest.raises(RolloutServerError, match="IncompleteRead"):
            eng.generate(["x"], n=1)
    finally:
        s.close()
    with pytest.raises(RolloutServerError, match="unreachable"):
        VllmEngine(s.url, build_tokenizer(), timeout=2)


def test_a_replica_cut_off_while_it_tells_its_weight_label_counts_as_down():
    """fleet.served, asked before and after every generation, read a reply cut short as a crash (IncompleteRead
    escaped it and failed the stage instead of the fleet recovering); it is a replica that is down."""
    from cpt_trainer.rollout import fleet

    s = FakeServer()
    try:
        s.cut = True
        replica = s.url.removesuffix("/v1")  # the weight-sync routes are at the server's root
        with pytest.raises(ConnectionError, match="cut short"):
            fleet.call(replica, "GET", "/weight_info")
        assert fleet.served([replica]) == {replica: None}
    finally:
        s.close()


def test_make_engine_falls_back_to_hf(server, random_base, caplog):
    from cpt_trainer.stages import load_model

    model, tok = load_model(random_base)
    with caplog.at_level(logging.WARNING):
        eng = make_engine("vllm", model, tok, rollout_url=server.url)
    assert eng.name == "hf" and "falling back to hf" in caplog.text
    assert make_engine("vllm", model, tok, rollout_url=None).name == "hf"
    with pytest.raises(ValueError):
        make_engine("tgi", model, tok)


def test_grpo_generates_through_the_vllm_engine(server, random_base, tmp_path):
    """TRL's rollout_func path: completions come from the server, weights are pushed after each step."""
    from cpt_trainer.learners.grpo import train_grpo
    from cpt_trainer.stages import load_model

    class RecordingSync:
        steps: list = []
        version = None  # labels no policy: the engine checks no replica (rollout.fleet is tested with real vLLM)
        recoveries: list = []

        def push(self, model, step=None):
            RecordingSync.steps.append(step)

        def close(self):
            pass

    model, tok = load_model(random_base)
    eng = VllmEngine(server.url, tok, weight_sync=RecordingSync())
    task = Task("reverse", synthetic.generate("reverse", 8, pool="train"), load_reward("exact"))
    stats, _ = train_grpo(model, tok, [task], str(tmp_path),
                          GrpoSpec(group_size=4, learning_rate=1e-4, kl_coef=0.0, prompts_per_step=2, max_steps=2,
                                   max_completion_tokens=16), engine=eng, quiet=True)
    assert stats["steps"] == 2 and RecordingSync.steps == [0, 1, 2]  # at the start, then after each step
    # the fake server solves 1 of 4 samples: mean reward 0.9 * 0.25 + 0.1
    assert stats["reward_curve"] == [pytest.approx(0.325, abs=1e-3)] * 2
    assert sum(1 for p, b in server.requests if p == "/v1/completions") == 2


def test_the_runs_rollout_key_is_sent_as_a_bearer_token(server, monkeypatch):
    """On a cluster the rollout servers require the run's key (vLLM --api-key from the run's Secret): every
    request of the learner carries it; without the variable (a local run) none is sent."""
    tok = build_tokenizer()
    prompts = [prompt_text(tok, r["prompt"]) for r in _task(2).rows]
    VllmEngine(server.url, tok).generate(prompts, n=1, temperature=0.0, max_tokens=8)
    assert server.auth and set(server.auth) == {None}
    monkeypatch.setenv("CPT_ROLLOUT_API_KEY", "run-key-123")
    server.auth.clear()
    VllmEngine(server.url, tok).generate(prompts, n=1, temperature=0.0, max_tokens=8)
    assert server.auth and set(server.auth) == {"Bearer run-key-123"}
