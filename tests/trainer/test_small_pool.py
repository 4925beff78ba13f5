"""A pool smaller than one step (RIF kept fewer prompts than promptsPerStep) trains, never 0 steps in silence
(issue 26: 7 kept of 256 with promptsPerStep 8 trained 0 learner steps and its report row said nothing)."""

from cpt_core.api import GrpoSpec
from cpt_core.results import NO_SIGNAL
from cpt_core.rewards import load_reward
from cpt_core.tasks import Task
from cpt_trainer import synthetic
from cpt_trainer.learners.grpo import fill_step, train_grpo
from cpt_trainer.stages import load_model


def test_fill_step_cycles_a_small_pool_to_one_step_and_leaves_others_alone():
    rows = [{"prompt": str(i)} for i in range(3)]
    assert [r["prompt"] for r in fill_step(rows, 8)] == ["0", "1", "2", "0", "1", "2", "0", "1"]
    assert fill_step(rows, 3) == rows and fill_step(rows, 2) == rows and fill_step([], 8) == []


def test_grpo_on_fewer_prompts_than_one_step_takes_its_steps(random_base, tmp_path):
    model, tok = load_model(random_base)
    task = Task("reverse", synthetic.generate("reverse", 3, seed=0, pool="train"), load_reward("exact"))
    stats, _ = train_grpo(model, tok, [task], str(tmp_path),
                          GrpoSpec(group_size=2, learning_rate=1e-3, prompts_per_step=8, max_steps=2,
                                   max_completion_tokens=4), seed=0, quiet=True)
    assert stats["steps"] == 2 and stats["prompts"] == 3, stats
    assert "3 prompt(s), fewer than promptsPerStep 8" in stats["pool_filled"]
    # the random model never answers right: that is said too (equal rewards), not hidden behind the steps
    assert "equal rewards" in stats[NO_SIGNAL]
