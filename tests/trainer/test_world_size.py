"""A stage started in the wrong world stops at once, naming both numbers (issue 31 item 3).

Real launches: the stage entry point as a plain process and under torchrun with two ranks, each started wrong on
purpose. The check runs before torch is imported, so a wrong world costs seconds, not a model load."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from cpt_core.api import CptSpec
from cpt_core.protocol import EXIT_BAD_INPUT
from cpt_core.stage import StageConfig
from cpt_trainer.world import WorldSizeError, check_world

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _config(tmp_path, world_size: int, replicas: int = 2, gpus: int = 0) -> str:
    spec = CptSpec.model_validate({
        "model": str(tmp_path / "no-model"), "method": "grpo",
        "tasks": [{"name": "t", "train": str(tmp_path / "t.jsonl"), "eval": str(tmp_path / "t.jsonl")}],
        "learner": {"replicas": replicas, "gpusPerReplica": gpus}, "storage": {"uri": str(tmp_path / "run")}})
    cfg = StageConfig(run="w", stage="evaluate", task_index=1, spec=spec, spec_hash="h", world_size=world_size)
    path = tmp_path / "stage.yaml"
    path.write_text(cfg.dump_yaml())
    return str(path)


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
                PYTHONPATH=os.pathsep.join([os.path.join(REPO, "trainer"), os.path.join(REPO, "core")]))


def test_learner_world_size_is_replicas_times_processes():
    spec = CptSpec.model_validate({"model": "m", "tasks": [{"name": "t", "train": "a", "eval": "b"}],
                                   "learner": {"replicas": 3, "gpusPerReplica": 8}, "storage": {"uri": "/x"}})
    assert (spec.learner.processes_per_replica, spec.learner.world_size) == (8, 24)
    cpu = spec.model_copy(update={"learner": spec.learner.model_copy(update={"gpus_per_replica": 0})})
    assert (cpu.learner.processes_per_replica, cpu.learner.world_size) == (1, 3)


def test_check_world_names_both_numbers(tmp_path):
    cfg = StageConfig.load(_config(tmp_path, world_size=16))
    check_world(cfg.model_copy(update={"world_size": 4}), {"WORLD_SIZE": "4"})  # the right world passes
    with pytest.raises(WorldSizeError) as err:
        check_world(cfg, {})  # no launcher: one process
    assert "WORLD_SIZE=1" in str(err.value) and "world_size=16" in str(err.value)
    with pytest.raises(WorldSizeError, match="'two' is not a number"):
        check_world(cfg, {"WORLD_SIZE": "two"})


def test_plain_process_for_a_two_rank_stage_exits_bad_input(tmp_path):
    """The stage config asks for 2 ranks; started as one plain process it refuses with exit 2 and both numbers."""
    proc = subprocess.run([sys.executable, "-m", "cpt_trainer.cli", "evaluate", "--config", _config(tmp_path, 2)],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr[-2000:]
    assert "WORLD_SIZE=1" in proc.stderr and "world_size=2" in proc.stderr
    assert "CPT_RESULT" not in proc.stdout


def test_torchrun_with_more_ranks_than_asked_fails_fast(tmp_path):
    """torchrun starts 2 ranks for a stage configured for 1: every rank stops with both numbers; torchrun fails."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "cpt_trainer.cli", "evaluate", "--config",
           _config(tmp_path, 1, replicas=1)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    # Each rank checks before anything else; torchrun stops the other rank at the first failure, so one or both
    # messages are printed depending on which rank gets there first.
    assert proc.stderr.count("sees WORLD_SIZE=2 but its config asks for world_size=1") >= 1, proc.stderr[-3000:]
    assert "CPT_RESULT" not in proc.stdout
