"""Replay of mastered prompts (issue 27): replayed prompts come only from earlier tasks' solved prompts, every
step keeps its B prompts (so no extra rollouts), a resumed run draws the same replayed prompts, and the evaluate
stage's solved set holds only prompts the model answered correctly."""

import json
from pathlib import Path

import pytest

from cpt_core.api import GrpoSpec, RifSpec, SftSpec
from cpt_core.rewards import is_correct, load_reward
from cpt_core.tasks import Task, prompt_text, reward_values
from cpt_core.validation import replay_slots
from cpt_trainer import synthetic
from cpt_trainer.evaluate import solved_rows
from cpt_trainer.learners.grpo import train_grpo
from cpt_trainer.learners.online_rif import OnlineRif
from cpt_trainer.learners.replay import COMPLETION, ReplayDraws, epoch_stream, sft_rows
from cpt_trainer.learners.sft import train_sft
from cpt_trainer.rollout import make_engine
from cpt_trainer.stages import load_model

TINY = str(Path(__file__).resolve().parents[2] / "examples" / "models" / "tiny-base")


def _solved(name: str, n: int) -> Task:
    rows = [dict(r, **{COMPLETION: "\\boxed{" + r["answer"] + "}"})
            for r in synthetic.generate(name, n, seed=1, pool="train")]
    return Task(name, rows, load_reward("exact"))


def test_draws_are_a_function_of_seed_and_step_and_stay_in_the_pool():
    pool = [_solved("copy", 5), _solved("reverse", 3)]
    a, b = ReplayDraws(pool, 2, seed=4), ReplayDraws(pool, 2, seed=4)
    assert [a.draw(s) for s in range(20)] == [b.draw(s) for s in range(20)]  # a resumed run draws the same
    assert all(0 <= k < 8 and len(set(a.draw(s))) == 2 for s in range(20) for k in a.draw(s))
    stats = a.stats(10)
    assert stats["replayed_prompts"] == 20 and sum(stats["by_task"].values()) == 20
    assert ReplayDraws([_solved("copy", 1)], 3, seed=0).draw(0) == [0, 0, 0]  # a pool smaller than r repeats
    assert replay_slots(0.25, 8) == 2 and replay_slots(0.01, 8) == 0


def test_plain_stream_keeps_grpos_step_count_and_uses_fresh_prompts_each_epoch():
    rows = list(epoch_stream(10, 3, 2, seed=0, total_steps=6))  # 10 prompts, 3 own slots, 2 steps per epoch
    assert len(rows) == 18 and all(0 <= r < 10 for r in rows)
    for e in range(3):
        assert len(set(rows[e * 6:(e + 1) * 6])) == 6  # no prompt twice within an epoch


def test_grpo_with_replay_fills_slots_from_the_solved_pool_and_keeps_batches_full(tmp_path):
    model, tok = load_model(TINY)
    task = Task("copy", synthetic.generate("copy", 8, seed=0, pool="train"), load_reward("exact"))
    replay = (_solved("reverse", 3),)
    grpo = GrpoSpec(group_size=2, learning_rate=1e-4, prompts_per_step=4, epochs=2, max_completion_tokens=8)
    stats, trainer = train_grpo(model, tok, [task], str(tmp_path), grpo, seed=0, quiet=True, carried={},
                                replay=replay, replay_fraction=0.25)
    assert stats["steps"] == 2 * (8 // 4)  # GRPO's own step count
    assert stats["replay"]["replayed_prompts"] == stats["steps"] and stats["replay"]["by_task"] == {"reverse": 4}
    indices = list(trainer.stream)
    batches = [indices[k:k + 8] for k in range(0, len(indices), 8)]  # B = 4 prompts x G = 2
    assert len(batches) == stats["steps"] and all(len(b) == 8 for b in batches)
    data = trainer.train_dataset
    for b in batches:
        prompts = [data[i] for i in b[::2]]
        assert [p["task"] for p in prompts] == ["copy"] * 3 + ["reverse"]
        assert prompts[3]["prompt"] in {prompt_text(tok, r["prompt"]) for r in replay[0].rows}
    assert COMPLETION not in data.column_names
    # rollouts: B x G per step, as without replay
    assert stats["rollout_tokens"] <= stats["steps"] * 4 * 2 * 8


def test_online_rif_with_replay_keeps_records_of_the_tasks_prompts_only():
    online = OnlineRif(8, 3, 2, seed=1, reprobe=0.5, floor=0.01, epoch_batches=8 // 4)
    assert online.max_prompts == 2 * 2 * 3  # GRPO's 4 steps, 3 own slots each
    online.observe([0, 0, 9, 9], [1.0, 0.0, 1.0, 1.0], 2, 0, [True, False, True, True])  # 9: a replayed prompt
    assert list(online.history) == [0] and online.consumed == [0]


def test_sft_replay_appends_the_fraction_and_self_sft_replays_its_own_answers():
    current = synthetic.generate("copy", 6, seed=0, pool="train")
    pool = [_solved("reverse", 4)]
    rows, stats = sft_rows(current, pool, 0.25, seed=0, own_answers=False)
    assert len(rows) == 8 and stats["replayed_prompts"] == 2 and rows[:6] == current
    assert all(COMPLETION not in r and "solution" not in r for r in rows[6:])
    rows2, _ = sft_rows(current, pool, 0.25, seed=0, own_answers=True)
    assert all(r["solution"] == "\\boxed{" + r["answer"] + "}" for r in rows2[6:])  # the model's own answer
    assert sft_rows(current, [], 0.25, 0, False) == (current, None)


def test_sft_trains_on_the_replayed_examples(tmp_path):
    model, tok = load_model(TINY)
    task = Task("copy", synthetic.generate("copy", 6, seed=0, pool="train"), load_reward("exact"))
    stats, _ = train_sft(model, tok, [task], str(tmp_path), SftSpec(learning_rate=1e-4, batch_size=4, epochs=1),
                         quiet=True, replay=(_solved("reverse", 4),), replay_fraction=0.25)
    assert stats["prompts"] == 8 and stats["replay"]["by_task"] == {"reverse": 2}


def test_solved_rows_are_exactly_the_correctly_answered_prompts():
    model, tok = load_model(TINY)
    task = Task("reverse", synthetic.generate("reverse", 12, seed=0, pool="train"), load_reward("exact"))
    engine = make_engine("hf", model, tok, None, 1)
    solved = solved_rows(engine, tok, task, 16)
    assert solved and len(solved) < 12  # the tiny base solves part of reverse
    values = reward_values(task, solved, [r[COMPLETION] for r in solved])
    assert all(is_correct(v) for v in values)
    json.dumps(solved)  # what solved.jsonl holds


def test_stages_keep_solved_prompts_with_the_task_and_replay_only_committed_ones(data_dir, tmp_path, capsys):
    """evaluate writes solved.jsonl (training rows answered correctly, committed with the task); task 2's train
    stage replays from it, and not from a task that is not committed; its KL is measured from the base too."""
    from stage_cli import run_stage_cli, stage_spec, write_stage_config

    from cpt_core.storage import layout, load_committed, open_store
    from cpt_trainer.stages import replay_tasks
    from cpt_core.stage import StageConfig

    storage = tmp_path / "run"
    spec = stage_spec(TINY, data_dir, storage, method="grpo", rollout={"engine": "hf"},
                 grpo={"groupSize": 2, "learningRate": 1e-4, "promptsPerStep": 8, "maxSteps": 1,
                       "maxCompletionTokens": 12},
                 evaluation={"maxCompletionTokens": 12, "maxSamples": 8},
                 replay={"fraction": 0.25, "probePrompts": 16}, forgetting={"klEverySteps": 1, "klPrompts": 2})
    spec.pop("rif")
    store = open_store(str(storage))
    cfg2 = StageConfig.model_validate({"run": "demo", "stage": "train", "task_index": 2, "spec": spec,
                                       "spec_hash": "h2"})
    for stage, index in (("evaluate", 0), ("train", 1)):
        assert run_stage_cli(capsys, stage, "--config", write_stage_config(tmp_path, spec, stage, index))[0] == 0
    assert replay_tasks(cfg2, store) == []  # task 1 trained but not committed: nothing to replay
    assert run_stage_cli(capsys, "evaluate", "--config", write_stage_config(tmp_path, spec, "evaluate", 1))[0] == 0
    committed = load_committed(store)[1]
    key = layout.task_key(1, "reverse", layout.SOLVED)
    assert any(f.key == key for f in committed.files)
    solved = [json.loads(x) for x in store.get_bytes(key).decode().splitlines()]
    train_rows = [json.loads(x) for x in open(data_dir / "reverse-train.jsonl")]
    assert committed.eval["replay_probe"] == {"scored": 16, "solved": len(solved)} and solved
    assert all({k: v for k, v in r.items() if k != COMPLETION} in train_rows for r in solved)
    reward = load_reward("exact")
    assert all(is_correct(v) for v in reward(prompts=[r["prompt"] for r in solved],
                                             completions=[r[COMPLETION] for r in solved],
                                             answer=[r["answer"] for r in solved]))
    (pool,) = replay_tasks(cfg2, store)
    assert pool.name == "reverse" and pool.rows == solved

    assert run_stage_cli(capsys, "train", "--config", write_stage_config(tmp_path, spec, "train", 2))[0] == 0
    train = store.get_json(layout.task_key(2, "add", layout.TRAIN_STATS))
    assert train["replay"]["by_task"] == {"reverse": 2} and train["replay"]["pool"] == len(solved)
    assert set(train["policy_kl"]) >= {"base", "task_start"} and train["policy_kl"]["base"]["last"] >= 0
