"""Issue 15: 1,000+ generated specs (wrong types, bounds, unicode, nesting, regexes, unknown keys) through
`cpt validate`, the planner and the rendering of children. Nothing may raise but the project's own SpecError,
and every refusal names the field it is about."""

from __future__ import annotations

import copy
import re
from datetime import datetime, timezone

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis (dev extra) is not installed")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from children_common import example  # noqa: E402
from cpt_core.tenancy import ENV_DIGEST, ENV_IMAGES, ENV_REWARDS  # noqa: E402
from cpt_core.validation import SpecError, validate_resource  # noqa: E402
from cpt_operator import cli  # noqa: E402
from cpt_operator.kube import manifests  # noqa: E402
from cpt_operator.kube.children import render  # noqa: E402
from cpt_operator.planner import Observed, plan  # noqa: E402

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)
EXAMPLES = 1000
# A refusal names its field: `spec.tasks[0].reward: ...`, `metadata.name: ...`.
NAMES_A_FIELD = re.compile(r"^(spec|metadata|apiVersion|kind)([.\[].*?)?: \S", re.S)
REGEX_PARTS = ["(", ")", "(?P<a>", "(?:", "\\", "\\d+", "[a-z]", "[", "]", "*", "+?", "{2,3}", "{99999999999}",
               "|", "^", "$", "\\boxed\\{(.*)\\}", "(?=x)", "(?<=ab)", "(?i)", "\\1", ".", "é", "\x00"]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.text(alphabet=st.characters(codec="utf-8"), min_size=60, max_size=300),
    st.sampled_from(["s3://b/k", "s3://", "file:///x", "/abs", "../rel", "http://u:p@h", "https://h:99999",
                     "ghcr.io/cpt-operator/learner:latest", "a" * 70, "UPPER", "x.y", "0", "0m", "-1", "1e9",
                     "exact", "builtins:exec", "os:system", "my.mod:fn", "a:b:c", "ünïcode", "rif-grpo", "hf"]),
    st.lists(st.sampled_from(REGEX_PARTS), min_size=1, max_size=8).map("".join),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)


def _paths(node, prefix=()):
    """Every (path) in a document: the places a mutation can hit."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@st.composite
def documents(draw):
    doc = example(draw(st.sampled_from(["sft", "grpo", "rif-grpo"])), name="fuzz")
    for _ in range(draw(st.integers(0, 3))):
        paths = [p for p in _paths(doc) if p and p[0] in ("spec", "metadata") and p != ("metadata",)]
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["plausible", "plausible", "plausible", "replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            parent.pop(path[-1], None)
        elif action == "add" and isinstance(parent[path[-1]], dict):  # an unknown or duplicate-looking key
            parent[path[-1]][draw(st.sampled_from(["extra", "imgae", "Tasks", "ñ", " "]))] = draw(values)
        elif action == "plausible":
            parent[path[-1]] = draw(_plausible(parent[path[-1]]))
        else:
            parent[path[-1]] = draw(values)
    return doc


def _plausible(old):
    """A value of the same type near what is valid: what a careful user might write."""
    if isinstance(old, bool):
        return st.booleans()
    if isinstance(old, int):
        return st.integers(min_value=0, max_value=64)
    if isinstance(old, float):
        return st.floats(min_value=1e-7, max_value=1.0)
    if isinstance(old, str):
        return st.sampled_from([old, old + "-2", old.upper(), old[:1], "s3://bucket/other/key.jsonl", "exact",
                                "numeric", "choice", "ghcr.io/cpt-operator/learner:0.2.0", "2", "16Gi",
                                r"answer: (\d+)", "team.rewards:score", "s3.credentials"])
    return st.just(old)


@pytest.fixture(autouse=True)
def _no_policy_env(monkeypatch):
    for name in (ENV_IMAGES, ENV_DIGEST, ENV_REWARDS):
        monkeypatch.delenv(name, raising=False)


def _exercise(doc: dict, tmp_path) -> str:
    """validate (both modes) -> plan -> children; returns 'valid' or 'refused'."""
    outcome = "valid"
    for mode in ("cluster", "local"):
        try:
            validate_resource(copy.deepcopy(doc), mode)
        except SpecError as exc:
            outcome = "refused" if mode == "cluster" else outcome
            assert exc.problems
            for line in exc.problems:
                assert NAMES_A_FIELD.match(line), f"refusal without a field: {line[:200]!r}"
    p = plan(copy.deepcopy(doc), Observed(now=NOW))  # never raises, valid or not
    assert p.valid == (outcome == "valid")
    if p.valid:
        resource = copy.deepcopy(doc)
        for obj in render(p, resource, ()).create:
            manifests.with_key(obj)
            yaml.safe_dump(obj)  # serialisable as sent
    return outcome


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(doc=documents())
def test_generated_specs_never_crash_and_refusals_name_a_field(doc, tmp_path_factory):
    _OUTCOMES.append(_exercise(doc, tmp_path_factory))


_OUTCOMES: list[str] = []


def test_the_fuzzer_ran_at_least_1000_specs_and_hit_both_outcomes():
    """Runs after the fuzz test (file order): it really generated that many, and specs that pass (so the
    planner and the rendering ran on them) as well as refusals."""
    if len(_OUTCOMES) < EXAMPLES:
        pytest.skip(f"run together with the fuzz test above (it ran {len(_OUTCOMES)} examples in this process)")
    assert _OUTCOMES.count("valid") >= 50 and _OUTCOMES.count("refused") >= 300, (
        _OUTCOMES.count("valid"), _OUTCOMES.count("refused"))


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(doc=documents())
def test_cpt_validate_exits_0_or_2_with_fields_named(doc, tmp_path_factory, capsys):
    """The command itself, in process: valid (0) or invalid (2, one line per problem), never a traceback."""
    path = tmp_path_factory.mktemp("fuzz") / "cpt.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    code = cli.main(["validate", "--mode", "cluster", str(path)])
    err = capsys.readouterr().err
    assert code in (0, cli.EXIT_INVALID)
    if code:
        problems = [ln.strip()[2:] for ln in err.splitlines() if ln.strip().startswith("- ")]
        assert problems and all(NAMES_A_FIELD.match(p) for p in problems), err[:500]
