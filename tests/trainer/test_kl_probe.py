"""The KL early warning's estimator (issue 27): k3 against numbers worked by hand, and the probe on a tiny model
against a separate token-by-token computation of the same sum."""

import copy
import json
import math

import pytest
import torch

from cpt_trainer.kl import KlProbe, k3
from cpt_trainer.stages import load_model


def test_k3_by_hand():
    # token 1: ref 0.5, policy 0.25 -> r = 0.5: 0.5 - 1 - ln 0.5 = 0.193147; token 2: ref 0.2, policy 0.4 -> r = 2:
    # 2 - 1 - ln 2 = 0.306853; the sum is 0.5 exactly
    ref, cur = [math.log(0.5), math.log(0.2)], [math.log(0.25), math.log(0.4)]
    assert k3(ref, cur) == pytest.approx(0.5, abs=1e-12)
    assert k3(ref, ref) == 0.0  # same policy: no divergence


def test_probe_matches_a_token_by_token_computation(random_base):
    ref, tok = load_model(random_base)
    probe = KlProbe(ref, tok, ["abc", "hello"], max_tokens=6, seed=0)
    assert probe.sequences and probe.estimate(ref) == pytest.approx(0.0, abs=1e-9)
    moved = copy.deepcopy(ref)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(torch.randn_like(p) * 0.05, alpha=1.0)
    total = 0.0
    for prompt, completion in probe.sequences:  # one forward per prefix: p(y_t | prompt, y_<t)
        for t, token in enumerate(completion):
            ids = torch.tensor([prompt + completion[:t]])
            with torch.no_grad():
                lp_ref = torch.log_softmax(ref(ids).logits[0, -1].double(), -1)[token].item()
                lp_cur = torch.log_softmax(moved(ids).logits[0, -1].double(), -1)[token].item()
            r = math.exp(lp_cur - lp_ref)
            total += r - 1 - math.log(r)
    expected = total / len(probe.sequences)
    assert expected > 0 and probe.estimate(moved) == pytest.approx(expected, rel=1e-4)


class _Probe:
    """A probe whose estimate is the step it is asked at (counts its calls)."""

    def __init__(self, scale):
        self.scale, self.calls, self.sequences = scale, 0, [1, 2]

    def estimate(self, model):
        self.calls += 1
        return self.scale * model


class _State:
    def __init__(self, step, total=6):
        self.global_step, self.max_steps = step, total


def test_points_of_both_references_survive_a_resume(capsys):
    from cpt_trainer.kl import KlCallback

    base, start = _Probe(1.0), _Probe(0.5)
    carried: dict = {}
    first = KlCallback({"task_start": start, "base": base}, every=2, carried=carried, task_index=2)
    for step in (1, 2, 3, 4):
        first.on_step_end(None, _State(step), None, model=step)
    saved = json.loads(json.dumps(carried))  # what the step checkpoint at step 4 carries
    assert saved["policy_kl"] == {"task_start": [[2, 1.0], [4, 2.0]], "base": [[2, 2.0], [4, 4.0]]}
    assert 'CPT_PROGRESS {"stage": "train", "task_index": 2, "step": 4' in capsys.readouterr().out
    resumed = KlCallback({"task_start": _Probe(0.5), "base": _Probe(1.0)}, every=2, carried=saved, task_index=2)
    for step in (5, 6):
        resumed.on_step_end(None, _State(step), None, model=step)
    resumed.on_train_end(None, _State(6), None, model=6)  # already recorded at 6: no second point
    stats = resumed.stats()["policy_kl"]
    assert stats["base"] == {"points": [[2, 2.0], [4, 4.0], [6, 6.0]], "last": 6.0, "max": 6.0}
    assert stats["task_start"]["points"] == [[2, 1.0], [4, 2.0], [6, 3.0]] and stats["estimator"] == "k3"
    assert resumed.readings() == {"base": {"last": 6.0, "max": 6.0}, "taskStart": {"last": 3.0, "max": 3.0}}


def test_task_one_estimates_its_single_reference_once():
    from cpt_trainer.kl import KlCallback

    probe = _Probe(1.0)
    cb = KlCallback({"task_start": probe, "base": probe}, every=1)
    cb.on_step_end(None, _State(1), None, model=1)
    assert probe.calls == 1 and cb.points == {"task_start": [[1, 1.0]], "base": [[1, 1.0]]}
