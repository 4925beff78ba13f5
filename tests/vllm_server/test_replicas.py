"""Two rollout replicas: the learner syncs every replica (one gloo group, per-replica rank offsets) and the vllm
engine spreads rollouts over both; after each step both serve the learner's weights. Then one replica is
SIGKILLed and restarted mid-stage: the learner re-syncs it and no step trains on rollouts of two policies."""

import os
import signal
import threading
import time

import pytest

pytest.importorskip("vllm", reason="vllm is not installed in this venv (make test runs tests/vllm_server in .venv-vllm)")

import torch  # noqa: E402

from greedy_probe import assert_server_matches_learner, probe_prompts  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_servers(random_base, tmp_path_factory):
    from vllm_servers import start_servers

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


def _kill_and_restart(victim, offset: int, stage_done: threading.Event, events: dict, release: threading.Event):
    """SIGKILL replica `victim` once the stage has generated on it (its access log past `offset`), then start it
    again on the same port: a pod of the rollout Deployment rescheduled, as the learner sees it."""
    while not stage_done.is_set():
        text = victim.log_path.read_bytes()[offset:].decode(errors="replace")
        if "POST /v1/completions" in text:
            os.killpg(victim.proc.pid, signal.SIGKILL)
            victim.proc.wait(30)
            events["killed"] = time.monotonic()
            victim.start()
            events["restarted"] = time.monotonic()
            release.wait(600)  # the server dies with the thread that started it (PR_SET_PDEATHSIG): stay alive
            return
        time.sleep(0.1)


def test_a_replica_killed_mid_stage_is_resynced_and_no_step_mixes_policies(two_servers, random_base, data_dir,
                                                                             tmp_path):
    """Issue 29's fleet-recovery test: replica 1 is SIGKILLed after the train stage's first rollouts and restarted;
    the stage completes all its steps (no retry from step 0), each step's rollouts came from exactly the policy
    the learner was at, and the restarted replica ends up serving the learner's final policy."""
    from cpt_core.stage import StageConfig
    from cpt_trainer import cli

    steps = 5
    storage = tmp_path / "run"
    spec = {
        "model": random_base, "method": "grpo", "seed": 1,
        "tasks": [{"name": "reverse", "train": str(data_dir / "reverse-train.jsonl"),
                   "eval": str(data_dir / "reverse-eval.jsonl"), "reward": "vllm_test_rewards:has_e"}],
        "grpo": {"groupSize": 4, "learningRate": 5e-3, "klCoef": 0.0, "promptsPerStep": 4, "maxSteps": steps,
                 "maxCompletionTokens": 16},
        "rollout": {"engine": "vllm", "replicas": 2}, "storage": {"uri": str(storage)},
    }
    cfg = StageConfig.model_validate({"run": "fleet-test", "stage": "train", "task_index": 1, "spec": spec,
                                      "spec_hash": "h1", "rollout_url": two_servers.url})
    path = tmp_path / "train.yaml"
    path.write_text(cfg.dump_yaml())
    victim = two_servers.servers[1]
    done, events, release = threading.Event(), {}, threading.Event()
    killer = threading.Thread(target=_kill_and_restart, daemon=True,
                              args=(victim, victim.log_path.stat().st_size, done, events, release))
    killer.start()
    try:
        assert cli.main(["train", "--config", str(path)]) == 0
        done.set()
        ended = time.monotonic()
        _check_fleet_run(storage, events, ended, steps, victim, two_servers, tmp_path)
    finally:
        done.set()
        release.set()
        killer.join(60)


def _check_fleet_run(storage, events, ended, steps, victim, two_servers, tmp_path):
    from cpt_core.storage import layout, open_store
    from cpt_trainer.stages import load_model

    assert "killed" in events and events["killed"] < ended, "the replica must die while the stage runs"

    store = open_store(str(storage))
    train = store.get_json(layout.task_key(1, "reverse", layout.TRAIN_STATS))
    assert train["steps"] == steps and "resumed_at_step" not in train, train  # completed, never restarted
    # one generation per optimizer step, each from the policy of the step it trained from: never two versions
    assert train["rollout_policy_steps"] == list(range(steps)), train["rollout_policy_steps"]
    recoveries = train["rollout_recoveries"]
    assert recoveries and all(r["step"] < steps for r in recoveries), recoveries
    print("fleet recoveries:", recoveries)  # seconds: the learner's wait for the restarted server + the re-sync

    # the restarted replica serves the learner's final policy: greedy ids equal the committed checkpoint's
    local = tmp_path / "ckpt"
    store.download_dir(layout.task_key(1, "reverse", layout.CHECKPOINT), str(local))
    model, tok = load_model(str(local))
    final = assert_server_matches_learner(model, tok, victim.url)
    assert final == assert_server_matches_learner(model, tok, two_servers.servers[0].url)
