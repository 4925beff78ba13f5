"""The proof that a sync is real: server greedy completions == the learner's own greedy completions.

Compared as token ids. fp32 kernels of vLLM (CPU) and transformers may order two logits that are equal to ~1e-6
differently; a divergence counts as a tie only if the learner's logits of the two tokens at that position are
within TIE (so a stale or partly loaded weight can never pass as a tie).
"""

import torch

from cpt_core.tasks import prompt_text

TIE = 1e-3
PROBES = ["rev abcde", "copy hello", "rev world", "copy 12345", "sort 3142", "rev kitten", "copy zebra", "add 2+3"]


def probe_prompts(tok):
    return [prompt_text(tok, p) for p in PROBES]


def learner_greedy(model, tok, prompts, max_tokens=16):
    from cpt_trainer.rollout.hf import HfEngine

    return [g[0].token_ids for g in HfEngine(model, tok).generate(prompts, n=1, temperature=0, max_tokens=max_tokens)]


def server_greedy(engine_or_url, tok, prompts, max_tokens=16):
    from cpt_trainer.rollout.vllm import VllmEngine

    eng = engine_or_url if hasattr(engine_or_url, "generate") else VllmEngine(engine_or_url, tok)
    return [g[0].token_ids for g in eng.generate(prompts, n=1, temperature=0, max_tokens=max_tokens)]


@torch.no_grad()
def real_mismatches(model, tok, prompts, server_ids, learner_ids):
    """Probes where server and learner differ other than by a float tie at the first differing token."""
    bad = []
    for prompt, s, h in zip(prompts, server_ids, learner_ids):
        if s == h:
            continue
        i = next((k for k in range(min(len(s), len(h))) if s[k] != h[k]), None)
        if i is None:  # one is a prefix of the other: different stop, not a tie
            bad.append((prompt, s, h))
            continue
        ctx = tok(prompt, add_special_tokens=False)["input_ids"] + h[:i]
        logits = model(torch.tensor([ctx], device=model.device)).logits[0, -1].float()
        if abs(float(logits[h[i]] - logits[s[i]])) > TIE:
            bad.append((prompt, s, h))
    return bad


def assert_server_matches_learner(model, tok, engine_or_url, prompts=None):
    """Returns the learner's greedy ids on the probes after checking the server agrees."""
    prompts = prompts or probe_prompts(tok)
    was = model.training
    model.eval()
    try:
        learner = learner_greedy(model, tok, prompts)
        server = server_greedy(engine_or_url, tok, prompts)
        bad = real_mismatches(model, tok, prompts, server, learner)
    finally:
        model.train(was)
    assert not bad, f"server greedy != learner greedy on {len(bad)} probes: {bad[:2]}"
    return learner
