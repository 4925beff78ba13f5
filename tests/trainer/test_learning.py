"""The science, at toy scale: RIF filters, GRPO and SFT learn (real training on the tiny model, CPU)."""

import torch

from cpt_core.api import GrpoSpec, SftSpec
from cpt_core.results import NO_SIGNAL
from cpt_core.rewards import load_reward
from cpt_core.tasks import Task
from cpt_trainer import synthetic
from cpt_trainer.evaluate import accuracy
from cpt_trainer.learners.grpo import train_grpo
from cpt_trainer.learners.sft import train_sft
from cpt_trainer.rif import run_rif
from cpt_trainer.rollout import make_engine
from cpt_trainer.stages import load_model


def _task(skill, pool, n=64):
    return Task(skill, synthetic.generate(skill, n, seed=0, pool=pool), load_reward("exact"))


def test_rif_drops_everything_on_a_random_model(random_base):
    model, tok = load_model(random_base)
    res = run_rif(make_engine("hf", model, tok), tok, _task("reverse", "train", 32), rollouts=4, min_correct=1, temperature=1.0, max_tokens=16)
    assert res.kept == 0 and res.dropped == 32 and res.filtered_fraction == 1.0
    assert res.rollout_tokens > 0 and res.kept_rows == []


def test_rif_keeps_a_sensible_fraction_on_a_partly_trained_model(tiny_base):
    model, tok = load_model(tiny_base)
    task = _task("reverse", "train")
    res = run_rif(make_engine("hf", model, tok), tok, task, rollouts=8, min_correct=1, temperature=1.0, max_tokens=16, seed=0)
    assert 0.05 <= res.kept / 64 <= 0.95, res.stats()
    assert res.kept + res.dropped == 64 and abs(res.filtered_fraction - res.dropped / 64) < 1e-9
    assert all(r in task.rows for r in res.kept_rows)
    # a stricter threshold keeps a subset; the same seed gives the same result
    strict = run_rif(make_engine("hf", model, tok), tok, task, rollouts=8, min_correct=3, temperature=1.0, max_tokens=16, seed=0)
    again = run_rif(make_engine("hf", model, tok), tok, task, rollouts=8, min_correct=1, temperature=1.0, max_tokens=16, seed=0)
    assert strict.kept <= res.kept and again.kept_rows == res.kept_rows
    # the general skill (copy), which the base knows better, keeps a larger fraction
    copy = run_rif(make_engine("hf", model, tok), tok, _task("copy", "train"), rollouts=8, min_correct=3,
                   temperature=1.0, max_tokens=16, seed=0)
    assert copy.kept > strict.kept and copy.mean_correct > res.mean_correct + 0.2, (copy.stats(), res.stats())


def test_grpo_raises_reward_on_a_partly_solved_task(tiny_base, tmp_path):
    model, tok = load_model(tiny_base)
    engine = make_engine("hf", model, tok)
    evalset = _task("reverse", "eval")
    before, _ = accuracy(engine, tok, evalset, max_tokens=16)
    stats, _ = train_grpo(model, tok, [_task("reverse", "train")], str(tmp_path),
                          GrpoSpec(group_size=8, learning_rate=1e-4, kl_coef=0.0, prompts_per_step=8, max_steps=20,
                                   max_completion_tokens=16), seed=0,
                          quiet=True)
    after, _ = accuracy(engine, tok, evalset, max_tokens=16)
    curve = stats["reward_curve"]
    assert stats["steps"] == 20 and len(curve) == 20 and stats["rollout_tokens"] > 20 * 64 * 5
    assert sum(curve[-5:]) / 5 > sum(curve[:5]) / 5 + 0.1, curve
    assert NO_SIGNAL not in stats
    assert after >= before + 0.15, (before, after)


def test_grpo_without_reward_signal_says_so_and_changes_nothing(random_base, tmp_path):
    model, tok = load_model(random_base)  # never answers in the right format: every reward is 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats, _ = train_grpo(model, tok, [_task("reverse", "train", 8)], str(tmp_path),
                          GrpoSpec(group_size=4, learning_rate=1e-3, kl_coef=0.0, prompts_per_step=4, max_steps=2,
                                   max_completion_tokens=8), seed=0, quiet=True)
    assert stats["steps"] == 2 and "equal rewards at all 2 steps" in stats[NO_SIGNAL], stats
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no gradient: nothing moved


def test_self_sft_learns_from_its_own_correct_rollouts(tiny_base, tmp_path):
    model, tok = load_model(tiny_base)
    engine = make_engine("hf", model, tok)
    res = run_rif(engine, tok, _task("reverse", "train"), rollouts=8, min_correct=1, temperature=1.0, max_tokens=16,
                  seed=0)
    rows = res.solution_rows()  # the model's own correct completions, one SFT example each
    exact = load_reward("exact")
    assert len(rows) >= res.kept and all(exact([r["solution"]], [r["answer"]])[0] > 0.5 for r in rows)
    evalset = _task("reverse", "eval")
    before, _ = accuracy(engine, tok, evalset, max_tokens=16)
    stats, _ = train_sft(model, tok, [Task("reverse", rows, exact)], str(tmp_path),
                         SftSpec(learning_rate=5e-4, batch_size=16, max_steps=30), seed=0, quiet=True)
    after, _ = accuracy(engine, tok, evalset, max_tokens=16)
    assert stats["steps"] == 30 and stats["prompts"] == len(rows)
    assert after >= before + 0.1, (before, after)


def test_curve_records_learning_along_the_way(tiny_base, tmp_path):
    from cpt_trainer.curve import CurveCallback

    model, tok = load_model(tiny_base)
    evalset, general = _task("reverse", "eval"), _task("copy", "eval")
    curve = CurveCallback(tok, 1, [evalset], [general], every=10, max_tokens=16)
    train_sft(model, tok, [_task("reverse", "train")], str(tmp_path),
              SftSpec(learning_rate=5e-4, batch_size=16, max_steps=25), seed=0, quiet=True, callbacks=(curve,))
    assert [p["step"] for p in curve.points] == [10, 20, 25]  # every 10 steps and the last
    after, _ = accuracy(make_engine("hf", model, tok), tok, evalset, max_tokens=16)
    assert curve.points[-1]["tasks"]["reverse"] == round(after, 6)  # the last point is the trained model
    assert set(curve.points[0]["general"]) == {"copy"}


def test_sft_raises_accuracy(tiny_base, tmp_path):
    model, tok = load_model(tiny_base)
    engine = make_engine("hf", model, tok)
    evalset = _task("reverse", "eval")
    before, _ = accuracy(engine, tok, evalset, max_tokens=16)
    stats, _ = train_sft(model, tok, [_task("reverse", "train")], str(tmp_path),
                         SftSpec(learning_rate=5e-4, batch_size=16, epochs=1, max_steps=30), seed=0, quiet=True)
    after, samples = accuracy(engine, tok, evalset, max_tokens=16)
    assert stats["steps"] == 30 and stats["loss_last"] < stats["loss_first"]
    assert after >= before + 0.15, (before, after)
    assert samples[0]["completion"].startswith("\\boxed{")
