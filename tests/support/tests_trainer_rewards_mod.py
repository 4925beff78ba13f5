"""A user reward module for `module:function` loading (importable by name: tests/support is on pytest's pythonpath)."""


def length_reward(completions, answer, **kwargs):
    return [float(len(c)) for c in completions]
