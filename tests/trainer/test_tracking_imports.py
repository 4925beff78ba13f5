"""A stage process imports a tracking package only if it will track with it (tracking.skip_unused_backends).

TRL and DeepSpeed import mlflow and wandb whenever installed; marking them absent first must keep both libraries
importable and make them skip the packages, and must leave a package alone where rank 0 tracks with it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from cpt_core.api import CptSpec
from cpt_core.stage import StageConfig
from cpt_trainer import tracking


def _cfg(tracked: dict | None) -> StageConfig:
    spec = CptSpec(model="m", method="grpo", tasks=[{"name": "t", "train": "t.jsonl", "eval": "e.jsonl"}],
                   storage={"uri": "/tmp/x"}, **({"tracking": tracked} if tracked else {}))
    return StageConfig(run="r", stage="train", task_index=1, spec=spec, spec_hash="0" * 16)


def test_only_the_backends_rank_0_tracks_with_are_left_importable(monkeypatch):
    for name in tracking.BACKENDS:
        monkeypatch.delitem(sys.modules, name, raising=False)  # restored after the test
    mlflow_only = _cfg({"mlflow": {"trackingUri": "http://mlflow:5000"}})
    assert tracking.skip_unused_backends(mlflow_only, rank=0) == ["wandb"]
    assert sys.modules["wandb"] is None and "mlflow" not in sys.modules
    monkeypatch.delitem(sys.modules, "wandb")
    assert tracking.skip_unused_backends(mlflow_only, rank=1) == ["mlflow", "wandb"]  # ranks > 0 never track
    monkeypatch.delitem(sys.modules, "mlflow")
    monkeypatch.delitem(sys.modules, "wandb")
    assert tracking.skip_unused_backends(_cfg(None), rank=0) == ["mlflow", "wandb"]


def test_an_imported_backend_is_left_as_it_is(monkeypatch):
    sentinel = object()
    monkeypatch.setitem(sys.modules, "mlflow", sentinel)  # a fork server's preload imported it already
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    assert tracking.skip_unused_backends(_cfg(None), rank=0) == ["wandb"]
    assert sys.modules["mlflow"] is sentinel


def test_trl_and_deepspeed_import_without_the_marked_packages():
    """In a fresh process, as a stage starts: mark, then import what a learner imports. Both libraries load, and
    neither holds mlflow (TRL's profiling module, DeepSpeed's autotuner flag)."""
    code = textwrap.dedent("""
        import sys
        from cpt_core.api import CptSpec
        from cpt_core.stage import StageConfig
        from cpt_trainer.tracking import skip_unused_backends
        spec = CptSpec(model="m", method="grpo", tasks=[{"name": "t", "train": "t.jsonl", "eval": "e.jsonl"}],
                       storage={"uri": "/tmp/x"})
        skip_unused_backends(StageConfig(run="r", stage="train", task_index=1, spec=spec, spec_hash="0" * 16), 0)
        from trl import GRPOTrainer
        import trl.extras.profiling as profiling
        import deepspeed.autotuning.autotuner as autotuner
        print(sys.modules["mlflow"], sys.modules["wandb"], hasattr(profiling, "mlflow"), autotuner.has_mlflow)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "DS_BUILD_OPS": "0", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-4:] == ["None", "None", "False", "False"], proc.stdout[-500:]
