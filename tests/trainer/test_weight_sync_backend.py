"""The learner pushes with the backend its executor chose (CPT_WEIGHT_SYNC_BACKEND, the same answer its servers
were started with), else by cpt_core.rollout's rule on this machine: no second rule of its own (issue 30 item 2)."""

from __future__ import annotations

from cpt_core import rollout
from cpt_trainer.rollout import weight_sync


def test_the_learner_takes_the_executors_choice(monkeypatch):
    for chosen in rollout.WEIGHT_SYNC_BACKENDS:
        monkeypatch.setenv(rollout.WEIGHT_SYNC_BACKEND_ENV, chosen)
        assert weight_sync.default_backend() == chosen
    monkeypatch.delenv(rollout.WEIGHT_SYNC_BACKEND_ENV)
    assert weight_sync.default_backend() == rollout.weight_sync_backend(rollout.local_gpu())
