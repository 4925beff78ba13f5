"""Rewards on hand-written cases; synthetic pools; dataset loading errors."""

import json

import pytest

from cpt_core import rewards as R
from cpt_trainer import synthetic
from cpt_core.tasks import TaskError, load_rows, load_task


def test_extract_answer():
    assert R.extract_answer("<think>x</think> so \\boxed{42}") == "42"
    assert R.extract_answer("\\boxed{1} then \\boxed{2}") == "2"
    assert R.extract_answer("\\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert R.extract_answer("no box here") is None
    assert R.extract_answer("\\boxed{unclosed") is None
    assert R.extract_answer("Answer: 17", r"Answer:\s*(\S+)") == "17"
    assert R.extract_answer("\\boxed{3}", r"Answer:\s*(\S+)") is None
    assert R.extract_answer([{"role": "assistant", "content": "\\boxed{ hi }"}]) == "hi"


def test_exact_reward_shape():
    f = R.load_reward("exact")
    out = f(completions=["\\boxed{abc}", "\\boxed{ABC }", "\\boxed{abd}", "abc"], answer=["abc"] * 4)
    assert out == pytest.approx([1.0, 1.0, 0.1, 0.0])


def test_numeric_reward():
    f = R.load_reward("numeric")
    comps = ["\\boxed{12}", "\\boxed{12.0}", "\\boxed{1,200}", "\\boxed{1/2}", "\\boxed{x}", "12"]
    answers = ["12", "12", "1200", "0.5", "3", "12"]
    assert f(completions=comps, answer=answers) == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.1, 0.0])


def test_choice_reward():
    f = R.load_reward("choice")
    comps = ["\\boxed{B}", "\\boxed{(b)}", "\\boxed{B. Paris}", "\\boxed{C}", "\\boxed{}"]
    assert f(completions=comps, answer=["B"] * 5) == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.1])


def test_pattern_reward_and_correctness():
    f = R.load_reward("exact", r"####\s*(\w+)")
    assert f(completions=["work #### 7", "\\boxed{7}"], answer=["7", "7"]) == pytest.approx([1.0, 0.0])
    assert R.is_correct(1.0) and R.is_correct(0.9) and not R.is_correct(0.1) and not R.is_correct(float("nan"))


def test_user_reward_and_unknown():
    f = R.load_reward("tests_trainer_rewards_mod:length_reward")
    assert f(completions=["ab", "abcd"], answer=["x", "y"]) == [2.0, 4.0]
    with pytest.raises(R.RewardError, match="unknown reward 'fuzzy'"):
        R.load_reward("fuzzy")
    with pytest.raises(R.RewardError, match="cannot import module"):
        R.load_reward("no_such_module_xyz:f")
    with pytest.raises(R.RewardError, match="has no function"):
        R.load_reward("tests_trainer_rewards_mod:nope")


def test_synthetic_pools_disjoint_and_deterministic():
    for skill in synthetic.GENERATORS:
        train = synthetic.generate(skill, 50, seed=1, pool="train")
        again = synthetic.generate(skill, 50, seed=1, pool="train")
        other = synthetic.generate(skill, 50, seed=2, pool="train")
        ev = synthetic.generate(skill, 50, seed=1, pool="eval")
        assert train == again and train != other
        prompts = {r["prompt"] for r in train}
        assert len(prompts) == 50
        assert not prompts & {r["prompt"] for r in ev}
        assert all(synthetic.pool_of(p) == "train" for p in prompts)
    row = synthetic.generate("add", 1, pool="eval")[0]
    a, b = row["prompt"].split("+")
    assert int(a) + int(b) == int(row["answer"])
    with pytest.raises(ValueError, match="unknown synthetic task"):
        synthetic.generate("nope", 1)


def test_dataset_errors(tmp_path):
    with pytest.raises(TaskError, match="not found"):
        load_rows(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "answer": "1"}\n{"prompt": "y"}\n')
    with pytest.raises(TaskError, match="bad.jsonl:2"):
        load_rows(str(bad))
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": [{"role": "user", "content": "q"}], "answer": 3, "img": "a.png"}) + "\n")
    rows = load_rows("file://" + str(good))
    assert rows == [{"prompt": [{"role": "user", "content": "q"}], "answer": "3", "img": "a.png"}]
    with pytest.raises(TaskError, match="unknown reward"):
        load_task("t", str(good), "fuzzy")
