"""Step checkpoints with 2 DeepSpeed ZeRO-2 ranks on CPU (gloo), through torchrun (issue 29, docs/checkpoints.md).

torchrun and both ranks (separate processes) is SIGKILLed right after the first step
checkpoint is committed (step 3 of 5, in the second epoch); the retry (attempt 2) must say it resumed at the
newest committed step, train only the steps after it, and end with weights equal bit for bit to an uninterrupted
2-rank run's. The committed step checkpoint holds both ranks' ZeRO optimizer shards and RNG states, each listed
in step.json under the rank that uploaded it.
"""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from step_checkpoint_lib import ROOT, checkpoint_spec, stage_messages, stored_weights

from cpt_core.stage import StageConfig
from cpt_core.storage import layout, open_store
from cpt_core.storage.steps import begin_step, commit_step, fetch_step, list_steps, upload_step_files

STEPS, EVERY = 5, 3  # 8 rows, 4 per step: 2 steps per epoch, so step 3 lies in epoch 2; 5 is the last


def _config(tmp_path, method, storage, attempt=0) -> str:
    spec = checkpoint_spec(tmp_path, method, storage, learner={"replicas": 2, "zeroStage": 2},
                 checkpoint={"everySteps": EVERY, "everyMinutes": 0, "keep": 2})
    spec["grpo"]["maxSteps"] = spec["sft"]["maxSteps"] = STEPS
    cfg = StageConfig.model_validate({"run": "ckpt", "stage": "train", "task_index": 1, "spec": spec,
                                      "spec_hash": "h1", "attempt": attempt, "world_size": 2})
    path = tmp_path / f"train-{storage.name}-a{attempt}.yaml"
    path.write_text(cfg.dump_yaml())
    return str(path)


def _torchrun(config: str) -> subprocess.Popen:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", DS_BUILD_OPS="0",
               CUDA_VISIBLE_DEVICES="", TORCH_EXTENSIONS_DIR=str(ROOT / ".tools" / "torch_extensions"),
               PYTHONPATH=os.pathsep.join([str(ROOT / "trainer"), str(ROOT / "operator")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port), "-m", "cpt_trainer.cli", "train", "--config", config]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _tree(pid: int) -> list[int]:
    """pid and all its descendants. torchrun starts each rank in a session of its own, so killing torchrun's
    process group would leave the ranks training: each is killed by its pid."""
    out = [pid]
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:  # the process ended meanwhile
        return out
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                children = fh.read().split()
        except FileNotFoundError:  # a thread that ended between the listing and the read (seen on a loaded CI run)
            continue
        out += [p for child in children for p in _tree(int(child))]
    return out


def _kill_all(pid: int) -> None:
    for p in _tree(pid):  # the ranks' pids are read before any is killed; then SIGKILL, no graceful stop
        os.kill(p, signal.SIGKILL)


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-2000:] + err[-4000:]
    return out, err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["grpo", "sft"])
def test_two_ranks_sigkilled_after_step_checkpoint_resume_bitwise(tmp_path, method):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    reference_run = _torchrun(_config(tmp_path, method, ref_dir))
    _finish(reference_run)
    reference = stored_weights(ref_dir, layout.task_key(1, "copy", layout.CHECKPOINT))

    proc = _torchrun(_config(tmp_path, method, run_dir))
    seen = []
    for line in proc.stdout:  # SIGKILL torchrun and both ranks once a step checkpoint is committed
        seen.append(line)
        if line.startswith("CPT_PROGRESS") and json.loads(line.split(" ", 1)[1]).get("checkpoint"):
            _kill_all(proc.pid)
            break
    assert proc.wait(timeout=60) == -signal.SIGKILL, "".join(seen) + proc.stderr.read()
    store = open_store(str(run_dir))
    assert not store.exists(layout.task_key(1, "copy", "checkpoint.json")), "killed before the end, not after"
    committed, _ = list_steps(store, 1, "copy")
    assert [c.step for c in committed] == [EVERY]
    by_rank = {r: [f["key"].rsplit("/", 1)[-1] for f in committed[0].files if f.get("rank") == r] for r in (0, 1)}
    for r in (0, 1):  # each rank uploaded its own ZeRO shard and RNG state
        assert f"rng_state_{r}.pth" in by_rank[r] and any(f"zero_pp_rank_{r}_" in k for k in by_rank[r]), by_rank

    out, err = _finish(_torchrun(_config(tmp_path, method, run_dir, attempt=1)))
    messages = stage_messages(out.splitlines())
    resumed = [m for kind, m in messages if kind == "CPT_PROGRESS" and "resumed_at" in m]
    assert [(m["resumed_at"], m["total_steps"], m["resumes"], m["attempt"]) for m in resumed] == \
        [(EVERY, STEPS, 1, 1)], out  # said once, by rank 0
    assert f"resumed at step {EVERY} of {STEPS}" in err
    trained = [m["step"] for kind, m in messages if kind == "CPT_PROGRESS" and m.get("loss") is not None]
    assert trained == list(range(EVERY + 1, STEPS + 1))  # only the steps after the checkpoint ran again
    results = [m for kind, m in messages if kind == "CPT_RESULT"]
    assert len(results) == 2 and all(r["steps"] == STEPS and r["resumed_at_step"] == EVERY for r in results)

    weights = stored_weights(run_dir, layout.task_key(1, "copy", f"{layout.CHECKPOINT}-r1"))
    assert set(weights) == set(reference)
    different = [k for k in weights if not weights[k].equal(reference[k])]
    assert not different, f"resumed weights differ from the uninterrupted 2-rank run's: {different[:5]}"
    assert store.list(layout.steps_dir(1, "copy")) == []  # superseded by the published checkpoint


def test_each_rank_reads_the_shared_files_and_its_own_shard(tmp_path):
    """step.json names every file's rank; a rank downloads the shared files and its own shard, never another
    rank's; the folder counts only once rank 0 committed after every rank's upload."""
    from cpt_trainer.rank_sync import wanted_by

    store = open_store(str(tmp_path / "store"))
    local = {}
    for r in (0, 1):
        d = tmp_path / f"rank{r}"
        (d / "global_step3").mkdir(parents=True)
        (d / "global_step3" / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt").write_bytes(bytes([r]) * 10)
        (d / f"rng_state_{r}.pth").write_bytes(b"rng")
        if r == 0:
            (d / "latest").write_text("global_step3")
            (d / "global_step3" / "mp_rank_00_model_states.pt").write_bytes(b"model")
        local[r] = str(d)
    fp = {"world_size": 2}
    prefix = begin_step(store, 1, "copy", 0, 3)
    files = [f for r in (0, 1) for f in upload_step_files(store, prefix, local[r], rank=r)]
    assert list_steps(store, 1, "copy")[0] == []  # every rank's files are up, step.json not yet: not committed
    ckpt = commit_step(store, 1, "copy", 0, 3, 5, files, fp)
    assert [c.step for c in list_steps(store, 1, "copy")[0]] == [3]
    fetch_step(store, ckpt, str(tmp_path / "r1"), wanted_by(1))
    got = sorted(str(p.relative_to(tmp_path / "r1")) for p in (tmp_path / "r1").rglob("*") if p.is_file())
    assert got == ["global_step3/mp_rank_00_model_states.pt", "global_step3/zero_pp_rank_1_mp_rank_00_optim_states.pt",
                   "latest", "rng_state_1.pth"]
