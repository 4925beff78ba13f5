"""The KL early warning's estimator (issue 27): k3 against numbers worked by hand, and the probe on a tiny model
against a separate token-by-token computation of the same sum."""

import copy
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
