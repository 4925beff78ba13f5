"""Issue 26: `cpt run`'s local vLLM servers are never open. Like a cluster run's Secret, every local server
requires a random key on vLLM's /v1 (VLLM_API_KEY = --api-key) and on the weight-sync routes, and the stages get
it in their environment. (The servers answering 401 without it: tests/vllm_server/test_server_process.py.)"""

from __future__ import annotations

import pytest

from cpt_core import api, rollout
from cpt_operator.local.rollout_server import LocalRollout, RolloutServer, RolloutServers, server_env


def test_every_server_requires_a_key_even_when_none_is_given(tmp_path):
    servers = [RolloutServer("m", tmp_path / "a.log"), RolloutServer("m", tmp_path / "b.log")]
    keys = {s.token for s in servers}
    assert len(keys) == 2 and all(len(k) >= 40 for k in keys)  # 32 random bytes, URL-safe
    for s in servers:
        assert s.env["VLLM_API_KEY"] == s.env["CPT_WEIGHT_SYNC_TOKEN"] == s.token


def test_replicas_share_one_key_and_the_clients_get_it(tmp_path):
    group = RolloutServers("m", tmp_path, replicas=3)
    assert {s.token for s in group.servers} == {group.token}
    env = rollout.client_key_env(group.token)
    assert env == {"CPT_WEIGHT_SYNC_TOKEN": group.token, "CPT_ROLLOUT_API_KEY": group.token}
    assert set(rollout.server_key_env("k")) | set(env) == set(rollout.KEY_ENV)  # the cluster's names, all of them


def test_a_key_in_the_callers_shell_is_replaced_not_inherited(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "from-the-shell")
    server = RolloutServer("m", tmp_path / "a.log", token="run-key")
    assert server.env["VLLM_API_KEY"] == "run-key"
    with pytest.raises(ValueError, match="needs a key"):
        server_env("")


def test_each_cpt_run_has_its_own_key_for_its_servers_and_stages(tmp_path):
    spec = api.CptSpec.model_validate({"model": "m", "method": "grpo", "storage": {"uri": str(tmp_path)},
                                       "tasks": [{"name": "t", "train": "a.jsonl", "eval": "b.jsonl"}]})
    one, two = LocalRollout(spec, tmp_path, tmp_path / "r1"), LocalRollout(spec, tmp_path, tmp_path / "r2")
    assert one.key != two.key
    assert one.client_env()["CPT_ROLLOUT_API_KEY"] == one.key


def test_servers_are_not_pinned_to_one_core_unless_the_caller_says_so(tmp_path, monkeypatch):
    """vLLM's CPU default binds its worker to core 0; a local server shares the cores with the learner and the
    other servers, so it runs unbound (the worker's real affinity: tests/vllm_server/test_server_process.py)."""
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    assert RolloutServer("m", tmp_path / "a.log").env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-3")
    assert RolloutServer("m", tmp_path / "b.log").env["VLLM_CPU_OMP_THREADS_BIND"] == "0-3"


def test_an_unbound_server_runs_its_worker_in_the_engine_core_process(tmp_path, monkeypatch):
    """With no thread binding to set up, vLLM's CPU worker needs no process of its own: one vLLM import fewer per
    start (the processes a real server has: tests/vllm_server/test_server_process.py). A caller that binds threads
    gets vLLM's own process layout, which its binding needs."""
    for name in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_ENABLE_V1_MULTIPROCESSING"):
        monkeypatch.delenv(name, raising=False)
    assert RolloutServer("m", tmp_path / "a.log").env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-3")
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in RolloutServer("m", tmp_path / "b.log").env
