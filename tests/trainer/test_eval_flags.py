"""eval.json's per-prompt results (`correct`): what the benchmark's per-prompt bootstrap resamples."""

from cpt_core.tasks import Task, make_reward


def test_evaluate_row_keeps_one_flag_per_prompt_in_row_order(random_base):
    from cpt_trainer.evaluate import evaluate_row
    from cpt_trainer.rollout.hf import HfEngine
    from cpt_trainer.stages import load_model

    model, tok = load_model(random_base)

    class Echo(HfEngine):  # a fixed engine: the answer is right for every other row
        def generate(self, prompts, n=1, temperature=1.0, max_tokens=64, seed=None):
            from cpt_trainer.rollout import Completion

            return [[Completion(f"\\boxed{{{k if k % 2 == 0 else 'x'}}}", [1])] for k in range(len(prompts))]

    rows = [{"prompt": f"q{k}", "answer": str(k)} for k in range(5)]
    task = Task("t", rows, make_reward("exact", None))
    bench = Task("dev-t", rows[:3], make_reward("exact", None))
    row = evaluate_row(Echo(model, tok), tok, 1, [task], [bench], max_tokens=4)
    assert row["correct"] == {"t": "10101", "dev-t": "101"}
    assert row["tasks"]["t"] == 0.6 and row["general"]["dev-t"] == round(2 / 3, 6)
