"""Issue 16: StageConfig.dump_yaml renders the spec once per distinct spec (cached, spliced between the header
keys) and must stay byte for byte what a plain yaml.dump of the whole config gives; the ConfigMap size check
reuses it and remembers its verdict."""

from __future__ import annotations

import copy
import threading

import pytest
import yaml

from cpt_core import stage, tenancy
from cpt_core.stage import _DUMPER, SPEC_YAML_CACHE, StageConfig
from cpt_core.validation import SpecError, validate_resource


def _plain(cfg: StageConfig) -> str:
    return yaml.dump(cfg.model_dump(mode="json", by_alias=True, exclude_none=True), Dumper=_DUMPER, sort_keys=True)


def _variants(base: dict) -> list[dict]:
    unicode = copy.deepcopy(base)
    unicode["spec"]["tasks"][0].update(name="add", answerPattern=r"Réponse ?: ([\d.,]+) ✓ 答え")
    unicode["spec"]["general"][0]["name"] = "copy"
    long = copy.deepcopy(base)
    long["spec"]["tasks"][1]["answerPattern"] = ("answer is " * 30) + r"(\w+)"  # wraps past 80 columns
    long["spec"]["model"] = "s3://models/" + "very-long-path-segment/" * 12
    quotes = copy.deepcopy(base)
    quotes["spec"]["tasks"][2]["answerPattern"] = r"""\\boxed\{"(?P<a>[^'"]+)'\}: \n \t # [x] {y} & *z"""
    quotes["spec"]["tasks"][0]["answerPattern"] = "'single' \"double\" \\ back: (- not a list)"
    minimal = copy.deepcopy(base)  # no retry, learner, general: defaults, and None fields left out
    for key in ("retry", "learner", "general"):
        minimal["spec"].pop(key)
    return [base, unicode, long, quotes, minimal]


@pytest.mark.parametrize("rollout_url", [None, "http://demo-2-rollout.ml.svc:8000/v1", "http://" + "x" * 200])
@pytest.mark.parametrize("variant", range(5))
def test_dump_yaml_is_byte_identical_to_a_plain_dump(resource, variant, rollout_url):
    spec = validate_resource(_variants(resource)[variant], "cluster").spec
    for index, step in ((0, "evaluate"), (len(spec.tasks), "train"), (1, "filter")):
        cfg = StageConfig(run="demo", namespace="ml", stage=step, task_index=index, attempt=index, spec=spec,
                          spec_hash=f"{index:064x}", rollout_url=rollout_url)
        first, again = cfg.dump_yaml(), cfg.dump_yaml()  # a miss, then a hit of the spec's cache
        assert first == again == _plain(cfg)
        assert StageConfig.model_validate(yaml.safe_load(first)) == cfg
        assert ("rollout_url" in first) == (rollout_url is not None)


def test_the_spec_is_rendered_once_per_distinct_spec(resource):
    stage.spec_yaml.cache_clear()
    spec = validate_resource(resource, "cluster").spec
    for attempt in range(5):
        StageConfig(run="demo", stage="train", task_index=1, attempt=attempt, spec=spec,
                    spec_hash="0" * 64).dump_yaml()
    assert stage.spec_yaml.cache_info().misses == 1
    other = copy.deepcopy(resource)
    other["spec"]["storage"]["uri"] = "s3://ckpt/other"
    StageConfig(run="demo", stage="train", task_index=1, spec=validate_resource(other, "cluster").spec,
                spec_hash="0" * 64).dump_yaml()
    assert stage.spec_yaml.cache_info().misses == 2
    assert stage.spec_yaml.cache_info().maxsize == SPEC_YAML_CACHE


def test_the_configmap_check_reuses_the_render_and_remembers_its_verdict(resource):
    stage.spec_yaml.cache_clear()
    with tenancy._sizes_lock:
        tenancy._sizes.clear()
    for _ in range(3):  # the reader's and the planner's validation of each pass
        validate_resource(resource, "cluster")
    assert stage.spec_yaml.cache_info().misses == 1 and len(tenancy._sizes) == 1
    renamed = copy.deepcopy(resource)
    renamed["metadata"]["name"] = "demo-with-a-longer-name"  # the name is in the config: its own size
    validate_resource(renamed, "cluster")
    assert len(tenancy._sizes) == 2 and stage.spec_yaml.cache_info().misses == 1
    sizes = sorted(tenancy._sizes.values())
    assert sizes[1] - sizes[0] == len("-with-a-longer-name")


def test_an_oversized_spec_is_still_refused_every_time(resource):
    resource["spec"]["tasks"][0]["answerPattern"] = "(x)" + "y" * (1024 * 1024)
    for _ in range(2):  # the second verdict comes from the memo
        with pytest.raises(SpecError) as err:
            validate_resource(resource, "cluster")
        assert any("over the 1 MiB a ConfigMap holds" in p for p in err.value.problems)


def test_concurrent_renders_agree(resource):
    specs = []
    for i in range(SPEC_YAML_CACHE + 8):  # more distinct specs than the cache holds: evictions under threads
        body = copy.deepcopy(resource)
        body["spec"]["storage"]["uri"] = f"s3://ckpt/run-{i}"
        specs.append(validate_resource(body, "cluster").spec)
    configs = [StageConfig(run="demo", stage="evaluate", task_index=0, spec=s, spec_hash="0" * 64) for s in specs]
    expected = [_plain(c) for c in configs]
    bad: list[int] = []

    def work(offset: int) -> None:
        for n in range(3 * len(configs)):
            i = (n * 7 + offset) % len(configs)
            if configs[i].dump_yaml() != expected[i]:
                bad.append(i)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_a_huge_spec_is_rendered_but_never_kept(resource):
    """A tenant's spec may approach etcd's 1.5 MB: such specs are rendered on every call, so the caches stay a
    few MB whatever is sent."""
    huge = copy.deepcopy(resource)
    huge["spec"]["tasks"][0]["answerPattern"] = "(a|b)" * (stage.SPEC_CACHE_MAX_BYTES // 4)
    stage.spec_yaml.cache_clear()
    with tenancy._sizes_lock:
        tenancy._sizes.clear()
    spec = validate_resource(huge, "cluster").spec
    assert len(stage.spec_json(spec)) > stage.SPEC_CACHE_MAX_BYTES
    cfg = StageConfig(run="demo", stage="train", task_index=1, spec=spec, spec_hash="0" * 64)
    assert cfg.dump_yaml() == _plain(cfg)
    assert stage.spec_yaml.cache_info().currsize == 0 and len(tenancy._sizes) == 0
