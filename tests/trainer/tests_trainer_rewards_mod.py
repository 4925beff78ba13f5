"""A user reward module for `module:function` loading (importable because conftest puts this folder on sys.path)."""


def length_reward(completions, answer, **kwargs):
    return [float(len(c)) for c in completions]
