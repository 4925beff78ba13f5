"""Reward functions: plain TRL-style callables `f(completions, answer, **kwargs) -> list[float]`.

Every built-in has the paper's shape, 0.9 * accuracy + 0.1 * format: a completion earns the format part when the
answer can be extracted at all (from `\\boxed{...}` or the task's `answer_pattern`), and the accuracy part when
the extracted answer matches. The same extraction decides correctness for RIF and evaluation, so the three never
disagree. A user reward `module:function` is any callable with the same signature; a completion counts as
correct when its reward is above CORRECT_THRESHOLD (0.5), which is exactly "accuracy = 1" for the built-ins.
"""

from __future__ import annotations

import importlib
import math
import re
import sys
from typing import Callable, Optional

ACCURACY_WEIGHT = 0.9
FORMAT_WEIGHT = 0.1
CORRECT_THRESHOLD = 0.5
BOXED = "\\boxed{"

RewardFn = Callable[..., list[float]]

# Never a reward, whatever the admin allows: a reward runs on every completion inside the learner, so a module
# whose functions run their argument as code, read or write files, spawn processes, open sockets or unpickle
# (`subprocess:getoutput`, `timeit:timeit`, `numpy:load`, ...) would run a tenant's completion on the pod.
# Rather than listing the dangerous ones (a list that is never complete), every standard-library module and
# every package of the learner image's own stack is refused: a reward is the tenant's own module.
IMAGE_STACK_MODULES = frozenset({
    "torch", "torchvision", "torchaudio", "triton", "numpy", "scipy", "pandas", "sympy", "mpmath", "sklearn",
    "transformers", "trl", "peft", "accelerate", "deepspeed", "datasets", "evaluate", "tokenizers",
    "safetensors", "huggingface_hub", "hf_xet", "vllm", "xformers", "ray", "gguf", "sentencepiece", "tiktoken",
    "yaml", "jinja2", "markupsafe", "dill", "cloudpickle", "joblib", "multiprocess", "pyarrow", "fsspec",
    "boto3", "botocore", "s3transfer", "urllib3", "requests", "httpx", "httpcore", "aiohttp", "websockets",
    "pydantic", "pydantic_core", "fastapi", "starlette", "uvicorn", "setuptools", "pkg_resources", "pip",
    "_distutils_hack", "wheel", "IPython", "psutil", "filelock", "tqdm", "rich", "click", "typer",
    "cpt_core", "cpt_trainer", "cpt_operator", "kopf", "kubernetes",
})


def never_a_reward(module: str) -> Optional[str]:
    """Why `module` (of a `module:function` reward) can never be one, or None. Private and dunder names too."""
    root = module.split(".")[0]
    if any(part.startswith("_") for part in module.split(".")):
        return "a private module"
    if root in sys.stdlib_module_names or root in sys.builtin_module_names:
        return "a standard-library module (some run code, files, processes or sockets)"
    if root in IMAGE_STACK_MODULES:
        return "a package of the learner image itself, not a reward module"
    return None


class RewardError(ValueError):
    """An unknown or unloadable reward: bad input, reported before any training."""


def completion_text(completion) -> str:
    """TRL passes strings (standard format) or [{"role": "assistant", "content": ...}] (conversational)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    return str(completion)


def _last_boxed(text: str) -> Optional[str]:
    """Content of the last \\boxed{...}, with nested braces balanced (LaTeX answers like \\boxed{\\frac{1}{2}})."""
    start = text.rfind(BOXED)
    if start < 0:
        return None
    depth, i = 1, start + len(BOXED)
    for k in range(i, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[i:k]
    return None


def extract_answer(text: str, pattern: Optional[str] = None) -> Optional[str]:
    """The answer in a completion: last match of `pattern` (its first group), else the last \\boxed{...}."""
    text = completion_text(text)
    if pattern:
        matches = list(re.finditer(pattern, text, flags=re.DOTALL))
        if not matches:
            return None
        m = matches[-1]
        return (m.group(1) if m.groups() else m.group(0)).strip()
    boxed = _last_boxed(text)
    return None if boxed is None else boxed.strip()


def _norm_text(s: str) -> str:
    return " ".join(str(s).strip().split()).lower()


def _to_number(s: str) -> Optional[float]:
    s = str(s).strip().replace(",", "").replace("$", "").rstrip(".")
    if s.endswith("%"):
        s = s[:-1]
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            return float(num) / float(den)
        return float(s)
    except (ValueError, ZeroDivisionError):
        return None


def match_exact(pred: str, answer: str) -> bool:
    return _norm_text(pred) == _norm_text(answer)


def match_numeric(pred: str, answer: str) -> bool:
    a, b = _to_number(pred), _to_number(answer)
    if a is None or b is None:
        return False
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


_CHOICE = re.compile(r"^\(?([A-Za-z])\)?(?:[.:)\s].*)?$", re.DOTALL)


def match_choice(pred: str, answer: str) -> bool:
    """Multiple choice: compare the option letter ("B", "(b)", "B. Paris" all mean B)."""
    p, a = _CHOICE.match(pred.strip()), _CHOICE.match(str(answer).strip())
    return bool(p and a and p.group(1).upper() == a.group(1).upper())


MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "exact": match_exact,
    "numeric": match_numeric,
    "choice": match_choice,
}


def score(completion, answer: str, kind: str = "exact", pattern: Optional[str] = None) -> tuple[float, float]:
    """(accuracy, format) of one completion, each 0 or 1."""
    pred = extract_answer(completion, pattern)
    if pred is None:
        return 0.0, 0.0
    return (1.0 if MATCHERS[kind](pred, str(answer)) else 0.0), 1.0


def make_builtin(kind: str, pattern: Optional[str] = None) -> RewardFn:
    """A TRL reward function for a built-in kind; `answer` is the dataset column TRL passes as a kwarg."""
    if kind not in MATCHERS:
        raise RewardError(f"unknown reward {kind!r}: use one of {sorted(MATCHERS)} or module:function")

    def reward(completions, answer, **kwargs) -> list[float]:
        out = []
        for c, a in zip(completions, answer):
            acc, fmt = score(c, a, kind, pattern)
            out.append(ACCURACY_WEIGHT * acc + FORMAT_WEIGHT * fmt)
        return out

    reward.__name__ = f"{kind}_reward"
    return reward


def load_reward(name: str, pattern: Optional[str] = None) -> RewardFn:
    """`exact` | `numeric` | `choice`, or `module.path:function` (imported now so a typo fails before training)."""
    if ":" not in name:
        return make_builtin(name, pattern)
    module_name, func_name = name.split(":", 1)
    why = never_a_reward(module_name)
    if why is not None:
        raise RewardError(f"reward {name!r}: module {module_name!r} can never be a reward ({why})")
    if func_name.startswith("_"):
        raise RewardError(f"reward {name!r}: {func_name!r} is private; a reward is a public function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RewardError(f"reward {name!r}: cannot import module {module_name!r}: {exc}") from exc
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise RewardError(f"reward {name!r}: module {module_name!r} has no function {func_name!r}")
    return fn


def is_correct(reward_value: float) -> bool:
    return reward_value is not None and not math.isnan(reward_value) and reward_value > CORRECT_THRESHOLD
