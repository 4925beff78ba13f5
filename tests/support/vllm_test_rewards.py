"""A reward with variance on an untrained model (so RIF keeps some prompts and GRPO has a gradient)."""


def has_e(completions, answer=None, **kwargs):
    return [1.0 if "e" in c else 0.0 for c in completions]
