"""Step checkpoints of the train stage (issue 29, docs/checkpoints.md).

A train stage process SIGKILLed after a committed step checkpoint is retried; the retry says it resumed at the
newest committed step (read from its output and from storage, not assumed), and its final weights equal those of
a run never stopped, bit for bit (CPU, hf engine, fixed seed), for GRPO and SFT. The step it resumes at lies in
the second epoch, so the data position (which prompts of which epoch are done) is part of what is checked.
Step checkpoints cut before their step.json, corrupted or written for another run are never used; at most
`keep` stay.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from cpt_core.stage import StageConfig
from cpt_core.storage import layout, open_store
from cpt_core.storage.steps import list_steps, prune_steps, publish_step, step_folders
from step_checkpoint_lib import EVERY, STEPS, TINY, checkpoint_spec, stage_messages, stored_weights


def _config(tmp_path, spec, attempt=0) -> StageConfig:
    return StageConfig.model_validate({"run": "ckpt", "stage": "train", "task_index": 1, "spec": spec,
                                       "spec_hash": "h1", "attempt": attempt})


def _write(tmp_path, cfg: StageConfig) -> str:
    path = tmp_path / f"train-a{cfg.attempt}-{abs(hash(cfg.spec.storage.uri))}.yaml"
    path.write_text(cfg.dump_yaml())
    return str(path)


def _stage(config: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "cpt_trainer.cli", "train", "--config", config],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.parametrize("method", ["grpo", "sft"])
def test_sigkill_after_step_checkpoint_resumes_bitwise(tmp_path, method):
    # the reference: the same stage never stopped, in this process
    from cpt_trainer.stages import run_stage

    ref_dir = tmp_path / "ref"
    run_stage(_config(tmp_path, checkpoint_spec(tmp_path, method, ref_dir)))
    reference = stored_weights(ref_dir, layout.task_key(1, "copy", layout.CHECKPOINT))

    run_dir = tmp_path / "run"
    spec = checkpoint_spec(tmp_path, method, run_dir)
    proc = _stage(_write(tmp_path, _config(tmp_path, spec)))
    seen = []
    for line in proc.stdout:  # SIGKILL as soon as the first step checkpoint is committed: no graceful stop
        seen.append(line)
        if line.startswith("CPT_PROGRESS") and json.loads(line.split(" ", 1)[1]).get("checkpoint"):
            proc.send_signal(signal.SIGKILL)
            break
    assert proc.wait(timeout=60) == -signal.SIGKILL, "".join(seen) + proc.stderr.read()
    store = open_store(str(run_dir))
    assert not store.exists(layout.task_key(1, "copy", "checkpoint.json")), "killed before the end, not after"
    committed, _ = list_steps(store, 1, "copy")
    assert 1 <= len(committed) <= 2 and committed[0].step in (EVERY, 2 * EVERY)
    newest = committed[0].step

    retry = _stage(_write(tmp_path, _config(tmp_path, spec, attempt=1)))
    out, err = retry.communicate(timeout=600)
    assert retry.returncode == 0, err[-3000:]
    messages = stage_messages(out.splitlines())
    resumed = [m for kind, m in messages if kind == "CPT_PROGRESS" and "resumed_at" in m]
    assert [(m["resumed_at"], m["total_steps"], m["resumes"], m["attempt"]) for m in resumed] == \
        [(newest, STEPS, 1, 1)], out
    assert f"resumed at step {newest} of {STEPS}" in err
    trained = [m["step"] for kind, m in messages if kind == "CPT_PROGRESS" and m.get("loss") is not None]
    assert trained == list(range(newest + 1, STEPS + 1))  # only the steps after the checkpoint ran again
    result = messages[-1][1]
    assert result["steps"] == STEPS and result["resumed_at_step"] == newest and result["resumes"] == 1
    # the marker the operator's status reads while the retried stage trains (before the task commits)
    assert store.get_json(layout.task_key(1, "copy", layout.RESUME)) == {
        "attempt": 1, "resumed_at_step": newest, "total_steps": STEPS, "resumes": 1}
    train_json = store.get_json(layout.task_key(1, "copy", layout.TRAIN_STATS))
    assert len(train_json["loss"]) == STEPS  # the curve continues the killed run's, it does not restart

    weights = stored_weights(run_dir, layout.task_key(1, "copy", f"{layout.CHECKPOINT}-r1"))
    base = load_file(str(TINY / "model.safetensors"))
    assert set(weights) == set(reference)
    assert any(not weights[k].equal(base[k]) for k in weights), "nothing was trained: the comparison proves nothing"
    different = [k for k in weights if not weights[k].equal(reference[k])]
    assert not different, f"resumed weights differ from the uninterrupted run's: {different[:5]}"
    assert store.list(layout.steps_dir(1, "copy")) == []  # superseded by the published checkpoint


# ------------------------------------------------------------------------------------------ storage rules

FP = {"spec_hash": "h1", "model": "m", "settings": "s", "data": "d", "world_size": 1}


def _folder(tmp_path, step: int) -> str:
    folder = tmp_path / f"local-{step}"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(bytes([step]) * 1000)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (folder / f"global_step{step}").mkdir()  # DeepSpeed nests its checkpoint: a folder is not the key's parent
    (folder / f"global_step{step}" / "mp_rank_00_model_states.pt").write_bytes(b"m" * step)
    return str(folder)


def test_cut_corrupt_or_foreign_step_checkpoints_are_never_used(tmp_path):
    from cpt_trainer.step_checkpoints import find_resume

    root = tmp_path / "store"
    store = open_store(str(root))
    publish_step(store, 1, "copy", 0, 2, 10, _folder(tmp_path, 2), FP)  # the only good one
    cut = publish_step(store, 1, "copy", 0, 4, 10, _folder(tmp_path, 4), FP)
    store.delete_keys([f"{cut.prefix}/{layout.STEP_MANIFEST}"])  # files up, step.json never written
    short = publish_step(store, 1, "copy", 0, 5, 10, _folder(tmp_path, 5), FP)
    (root / short.prefix / "model.safetensors").write_bytes(b"\x05" * 10)  # truncated after its commit
    bad = publish_step(store, 1, "copy", 1, 6, 10, _folder(tmp_path, 6), FP)
    (root / bad.prefix / "model.safetensors").write_bytes(b"\x07" * 1000)  # same size, other bytes
    foreign = publish_step(store, 1, "copy", 1, 8, 10, _folder(tmp_path, 8), dict(FP, spec_hash="h0"))

    said = []
    found, refused = find_resume(store, 1, "copy", FP, str(tmp_path / "resume"), say=said.append)
    assert found is not None and found.step == 2 and found.resumes == 1
    assert (Path(found.local_dir) / "model.safetensors").read_bytes() == bytes([2]) * 1000
    assert said == refused and len(refused) == 4
    text = "\n".join(refused)
    assert f"{cut.prefix}: no step.json" in text
    assert f"{short.prefix}: {short.prefix}/model.safetensors has 10 bytes, step.json says 1000" in text
    assert f"step checkpoint {bad.prefix}: 1 file(s) differ" in text
    assert (f"step checkpoint {foreign.prefix} (step 8) was written for another run of this task and is refused: "
            "spec_hash 'h0', this stage has 'h1'") in text
    committed, _ = list_steps(store, 1, "copy")
    assert [c.step for c in committed] == [2]  # corrupt and foreign ones deleted on sight
    assert store.list(short.prefix) and not store.list(bad.prefix) and not store.list(foreign.prefix)

    other_model = dict(FP, model="m2", world_size=2)
    found, refused = find_resume(store, 1, "copy", other_model, str(tmp_path / "resume2"), say=lambda _: None)
    assert found is None and any("model 'm', this stage has 'm2'; world_size 1, this stage has 2" in r
                                 for r in refused)


def test_storage_is_bounded_by_keep(tmp_path):
    store = open_store(str(tmp_path / "store"))
    for step in range(1, 6):
        ckpt = publish_step(store, 1, "copy", 0, step, 10, _folder(tmp_path, step), FP)
        prune_steps(store, 1, "copy", keep=2, refuse=FP, spare=ckpt.prefix)
        folders = step_folders(store.list(layout.steps_dir(1, "copy")), 1, "copy")
        assert len(folders) <= 2
    assert [c.step for c in list_steps(store, 1, "copy")[0]] == [5, 4]


def test_grpo_sampler_keeps_the_stock_order_and_knows_its_epoch():
    """An uninterrupted run sees TRL's own orders; a resumed one starts in epoch e with epoch e's order, where
    the stock sampler (fresh after a restart) would replay epoch 0's."""
    from trl.trainer.utils import RepeatSampler

    from cpt_trainer.learners.grpo import _EpochRepeatSampler

    args = (list(range(12)), 2, 4, 1, True, 7)
    stock, ours = RepeatSampler(*args), _EpochRepeatSampler(*args)
    for epoch in range(3):
        ours.set_epoch(epoch)
        assert list(ours) == list(stock)
    fresh_ours, fresh_stock = _EpochRepeatSampler(*args), RepeatSampler(*args)
    fresh_ours.set_epoch(2)
    assert list(fresh_ours) == list(ours) != list(fresh_stock)
