"""Two rollout replicas: the learner syncs every replica (one gloo group, per-replica rank offsets) and the vllm
engine spreads rollouts over both; after each step both serve the learner's weights."""

import pytest

pytest.importorskip("vllm", reason="vllm is not installed in this venv (make test runs tests/vllm_server in .venv-vllm)")

import torch  # noqa: E402

from greedy_probe import assert_server_matches_learner, probe_prompts  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_servers(random_base, tmp_path_factory):
    from conftest import start_servers

    servers = start_servers(random_base, tmp_path_factory.mktemp("rollout-logs"), replicas=2)
    yield servers
    servers.stop()


def test_every_replica_serves_the_new_weights(two_servers, random_base):
    from cpt_trainer.rollout import make_engine
    from cpt_trainer.stages import load_model

    model, tok = load_model(random_base)
    engine = make_engine("vllm", model, tok, rollout_url=two_servers.url)
    assert engine.base_urls == [s.url for s in two_servers.servers]
    prompts = probe_prompts(tok)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    previous = None
    for target in ("\\boxed{eeee}", "\\boxed{1234}"):
        model.train()
        ids = torch.tensor([tok(prompts[0] + target, add_special_tokens=False)["input_ids"]])
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
        engine.sync_weights(model)
        outs = [assert_server_matches_learner(model, tok, s.url, prompts) for s in two_servers.servers]
        assert outs[0] == outs[1] and outs[0] != previous
        previous = outs[0]

    before = [s.log_path.read_text().count("POST /v1/completions") for s in two_servers.servers]
    groups = engine.generate(prompts * 4, n=2, temperature=1.0, max_tokens=8, seed=3)
    after = [s.log_path.read_text().count("POST /v1/completions") for s in two_servers.servers]
    assert len(groups) == 32 and all(len(g) == 2 for g in groups)
    assert all(a > b for a, b in zip(after, before)), "rollouts must reach every replica"
    engine.close()
