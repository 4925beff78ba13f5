"""Issues 15 and 26: 3,000+ generated specs (wrong types, bounds, unicode, nesting, regexes, unknown keys,
endpoints that pass the URL pattern but not the parser, internal hosts, images with a newline or Unicode,
code-running reward modules, accept-regression annotations of thousands of digits) through `cpt validate`, the
planner (with committed rows, so the forgetting guard reads the annotation) and the rendering of children.
Nothing may raise but the project's own SpecError, no example may hang (each has a wall-clock alarm), and every
refusal names the field it is about. ~50 s for the 3,000 on one busy core."""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import sys
import time
from datetime import datetime, timezone

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis (dev extra) is not installed")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from children_common import example  # noqa: E402
from cpt_core.results import CommittedTask  # noqa: E402
from cpt_core.tenancy import ENV_DIGEST, ENV_IMAGES, ENV_INTERNAL_ENDPOINTS, ENV_REWARDS  # noqa: E402
from cpt_core.validation import SpecError, validate_resource  # noqa: E402
from cpt_operator import cli  # noqa: E402
from cpt_operator.kube import manifests  # noqa: E402
from cpt_operator.kube.children import render  # noqa: E402
from cpt_operator.planner import ACK_REGRESSION_ANNOTATION, Observed, plan, task_spec_hash  # noqa: E402

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)
EXAMPLES = int(os.environ.get("CPT_FUZZ_EXAMPLES") or 3000)  # fewer only to profile the fuzzer itself
HANG_SECONDS = 20  # one example (two validations, two plans, the rendering) takes milliseconds; this is a hang
# A refusal names its field: `spec.tasks[0].reward: ...`, `metadata.name: ...`.
NAMES_A_FIELD = re.compile(r"^(spec|metadata|apiVersion|kind)([.\[].*?)?: \S", re.S)
REGEX_PARTS = ["(", ")", "(?P<a>", "(?:", "\\", "\\d+", "[a-z]", "[", "]", "*", "+?", "{2,3}", "{99999999999}",
               "|", "^", "$", "\\boxed\\{(.*)\\}", "(?=x)", "(?<=ab)", "(?i)", "\\1", ".", "é", "\x00"]
# Inputs that passed the schema's patterns and then broke every pass (issue 26), and their neighbours.
ENDPOINTS = ["http://[::1", "https://[fe80::1", "http://[::1]:9000", "http://[fe80::1%25eth0]:9000", "http://:80",
             "https://h:0", "https://h:99999", "http://h:-1", "http://h:x", "http://169.254.169.254/latest",
             "http://127.1", "http://2130706433", "http://0x7f.0.0.1", "http://[::ffff:127.0.0.1]", "http://minio:9000",
             "http://minio.storage.svc:9000", "http://metadata.google.internal", "http://ünï.example.com",
             "http://a_b.example.com", "http://10.0.0.1:9000", "https://s3.us-east-1.amazonaws.com",
             "http://8.8.8.8:9000", "https://[2001:4860:4860::8888]", "http://h?x=1", "https://h.example/#frag",
             "ftp://h", "http://" + "a" * 300 + ".com", "http://" + ".".join(["a"] * 200)]
IMAGES = ["ghcr.io/cpt-operator/learner:0.2.0\n", "ghcr.io/cpt-operator/learner:0.2.\u0661",
          "ghcr.io/cpt-operator/lëarner:1", "ghcr.io/cpt-operator/learner:1\u2028", "ghcr.io/cpt-operator/learner:1 ",
          "localhost:5000/x:1", "ghcr.io/cpt-operator/learner@sha256:" + "a" * 64 + "\n"]
REWARDS = ["timeit:timeit", "numpy:load", "torch:load", "subprocess:getoutput", "team:_f", "team._x:f",
           "logging.config:listen", "team_rewards:score", "a" * 300 + ":f"]
ANNOTATIONS = ["9" * 5000, "0" * 4999 + "1", "1" * 4301, "²", "-1", "0007", " 2 ", "", "two", "1e3", "٣", "2\n",
               "9" * 18, "9" * 19]

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.text(alphabet=st.characters(codec="utf-8"), min_size=60, max_size=300),
    st.sampled_from(ENDPOINTS + IMAGES + REWARDS + ANNOTATIONS),
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


_BASES = {method: example(method, name="fuzz") for method in ("sft", "grpo", "rif-grpo")}  # parsed once


@st.composite
def documents(draw):
    doc = copy.deepcopy(_BASES[draw(st.sampled_from(sorted(_BASES)))])
    if draw(st.integers(0, 3)) == 0:  # read by the planner's forgetting guard once two tasks are committed
        doc["metadata"]["annotations"] = {ACK_REGRESSION_ANNOTATION: draw(st.one_of(
            st.sampled_from(ANNOTATIONS), st.text(max_size=8), st.integers(-5, 10**30), st.none(), st.booleans()))}
    if draw(st.integers(0, 4)) == 0:  # one of the shapes issue 26 found, where it is read
        where, pool = draw(st.sampled_from([(("storage", "endpoint"), ENDPOINTS), (("learner", "image"), IMAGES),
                                            (("rollout", "image"), IMAGES), (("tasks", 0, "reward"), REWARDS)]))
        node = doc["spec"]
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = draw(st.sampled_from(pool))
    if draw(st.integers(0, 9)) == 0:
        doc["kind"] = draw(st.sampled_from(["continualposttraining", "ContinualPostTrainings", "CPT", 7, None]))
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
                                r"answer: (\d+)", "team.rewards:score", "s3.credentials", *ENDPOINTS[:12],
                                *IMAGES[:3], *REWARDS[:4]])
    return st.just(old)


@pytest.fixture(autouse=True)
def _no_policy_env(monkeypatch):
    for name in (ENV_IMAGES, ENV_DIGEST, ENV_REWARDS, ENV_INTERNAL_ENDPOINTS):
        monkeypatch.delenv(name, raising=False)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"one example ran past {HANG_SECONDS} s")


def _committed(doc: dict) -> dict[int, CommittedTask]:
    """Base and the first two tasks committed, the first task dropping 0.5 after the second: the planner's
    forgetting guard then reads the accept-regression annotation."""
    spec = validate_resource(copy.deepcopy(doc)).spec
    names = ["base"] + [t.name for t in spec.tasks]
    first = names[1]
    out = {}
    for i, acc in zip(range(min(3, len(names))), (0.2, 0.9, 0.4)):
        out[i] = CommittedTask(i, names[i], task_spec_hash(spec, i), {"tasks": {first: acc}, "general": {}},
                               checkpoint=None if i == 0 else f"tasks/{i}-{names[i]}/checkpoint")
    return out


def _exercise(doc: dict, tmp_path) -> str:
    """validate (both modes) -> plan (nothing committed, then two tasks committed) -> children; returns 'valid' or
    'refused'. Raises Hang past HANG_SECONDS (SIGALRM: the fuzzer runs in the main thread). pytest-timeout's own
    timer (the same signal) is put back afterwards with what was left of it."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    left, interval = signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    start = time.monotonic()
    try:
        return _exercise_once(doc)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if left:
            signal.setitimer(signal.ITIMER_REAL, max(left - (time.monotonic() - start), 0.001), interval)


def _exercise_once(doc: dict) -> str:
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
            json.dumps(manifests.with_key(obj), allow_nan=False)  # serialisable as the API client sends it
        later = plan(copy.deepcopy(doc), Observed(now=NOW, committed=_committed(doc)))
        assert later.valid
        for obj in render(later, copy.deepcopy(doc), ()).create:
            json.dumps(obj, allow_nan=False)
    return outcome


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(doc=documents())
def test_generated_specs_never_crash_and_refusals_name_a_field(doc, tmp_path_factory):
    start = time.monotonic()
    _OUTCOMES.append(_exercise(doc, tmp_path_factory))
    _SECONDS.append(time.monotonic() - start)


_OUTCOMES: list[str] = []
_SECONDS: list[float] = []


def test_the_fuzzer_ran_at_least_3000_specs_and_hit_both_outcomes():
    """Runs after the fuzz test (file order): it really generated that many (an exception or a hang in any of
    them fails that test), and specs that pass (so the planner and the rendering ran on them) as well as
    refusals."""
    if len(_OUTCOMES) < EXAMPLES:
        pytest.skip(f"run together with the fuzz test above (it ran {len(_OUTCOMES)} examples in this process)")
    assert _OUTCOMES.count("valid") >= 150 and _OUTCOMES.count("refused") >= 900, (
        _OUTCOMES.count("valid"), _OUTCOMES.count("refused"))
    print(f"\n[fuzz] {len(_OUTCOMES)} specs: {_OUTCOMES.count('valid')} valid, {_OUTCOMES.count('refused')} refused; "
          f"slowest {max(_SECONDS):.2f} s, total {sum(_SECONDS):.1f} s in the pipeline")


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


@pytest.mark.parametrize("annotation, accepted", [("9" * 5000, True), ("0" * 4999 + "2", True), ("1", False),
                                                  ("²", False), (2, True), ("2\n", True), ("-3", False)])
def test_the_accept_regression_annotation_of_any_length_is_read_not_raised(annotation, accepted):
    """Issue 26: thousands of digits hit int()'s 4,300-digit limit in every pass. Read by length now: a number
    past every row accepts the regression after the last committed task, like any number >= it."""
    doc = copy.deepcopy(_BASES["grpo"])
    doc["spec"]["forgetting"] = {"maxDrop": 0.05, "onRegression": "pause"}
    doc["metadata"]["annotations"] = {ACK_REGRESSION_ANNOTATION: annotation}
    p = plan(doc, Observed(now=NOW, committed=_committed(doc)))
    paused = p.status["phase"] == "Suspended" and "ForgettingRegression" in str(p.status["conditions"])
    assert paused is not accepted, p.status["conditions"]


@pytest.mark.parametrize("endpoint", ["http://[::1", "https://[fe80::1", "http://[::1]:99999"])
def test_an_endpoint_that_passes_the_pattern_but_not_the_parser_is_a_refusal(endpoint):
    doc = copy.deepcopy(_BASES["sft"])
    doc["spec"]["storage"]["endpoint"] = endpoint
    assert _exercise(doc, None) == "refused"
    (valid,) = [c for c in plan(doc, Observed(now=NOW)).status["conditions"] if c["type"] == "SpecValid"]
    assert valid["status"] == "False" and "spec.storage.endpoint: not a URL that parses" in valid["message"]


def test_an_example_that_hangs_is_stopped_and_reported(monkeypatch):
    """The per-example watchdog itself: a pass that never returns fails that example instead of the whole run."""
    monkeypatch.setattr(sys.modules[__name__], "HANG_SECONDS", 1)
    monkeypatch.setattr(sys.modules[__name__], "_exercise_once", lambda doc: time.sleep(30))
    start = time.monotonic()
    with pytest.raises(Hang, match="past 1 s"):
        _exercise(copy.deepcopy(_BASES["sft"]), None)
    assert time.monotonic() - start < 10
