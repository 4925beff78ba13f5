"""The stage contract between the planner and the trainer's stage entry points.

The planner writes a StageConfig into the stage ConfigMap (cluster) or a file (local); `cpt-trainer STAGE
--config FILE` reads it. Storage credentials are never part of it: they come from the environment.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field

from cpt_core.api import DEFAULT_RIF_MODE, STAGES, CptSpec, Stage

_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# Distinct specs whose `spec:` YAML is kept (lru_cache, thread-safe). A run's first pass renders its spec three
# times (two ConfigMap size checks, the ConfigMap) while 7 other workers render theirs: 32 keeps every pass's
# entry with room to spare. An entry is the spec's JSON and YAML, a few KB.
SPEC_YAML_CACHE = 32
# A spec whose JSON is longer is rendered on every call, never kept: a tenant's spec may approach etcd's 1.5 MB,
# and 32 of those would pin ~150 MB; with this bound the caches hold a few MB at most.
SPEC_CACHE_MAX_BYTES = 64 * 1024

STAGE_CONFIG_FILE = "stage.yaml"
BASE_TASK_NAME = "base"  # task index 0: the base model, evaluated before any training (row 0 of the matrix)


def stages_for(method: "str | CptSpec", task_index: int) -> list[str]:
    """Stages of one task in order. Index 0 only evaluates the base model; the filter stage (rollouts) only for
    the sampling methods (self-sft, rif-grpo with rif.mode prefilter). Given a method name alone, rif-grpo's
    default mode (api.DEFAULT_RIF_MODE) is assumed; pass the spec to honour spec.rif.mode."""
    filtered, trained, evaluated = STAGES
    if task_index == 0:
        return [evaluated]
    filter_stage = method.has_filter_stage if isinstance(method, CptSpec) else (
        method == "self-sft" or (method == "rif-grpo" and DEFAULT_RIF_MODE == "prefilter"))
    return ([filtered] if filter_stage else []) + [trained, evaluated]


class StageConfig(BaseModel):
    """Everything one stage process needs to know; the spec is carried whole so nothing drifts."""

    model_config = ConfigDict(extra="forbid")

    run: str = Field(description="Name of the ContinualPostTraining resource.")
    namespace: str = "default"
    run_uid: Optional[str] = Field(None, description="The run's uid: the stage checks the storage owner marker "
                                                     "(cpt_core.storage.owner) against it before writing.")
    stage: Stage
    task_index: int = Field(ge=0, description="1..T for tasks; 0 evaluates the base model.")
    attempt: int = Field(0, ge=0)
    spec: CptSpec
    spec_hash: str = Field(description="Hash of tasks[:task_index] and the training settings; see planner.")
    rollout_url: Optional[str] = Field(None, description="vLLM OpenAI-compatible server of this task, if any.")
    world_size: int = Field(1, ge=1, description="Processes the executor starts for this stage (a cluster job: "
                                                 "learner.replicas x processes per replica; `cpt run`: 1). Every "
                                                 "rank checks WORLD_SIZE against it before anything else.")

    @property
    def task_name(self) -> str:
        return BASE_TASK_NAME if self.task_index == 0 else self.spec.tasks[self.task_index - 1].name

    def dump_yaml(self) -> str:
        """The config as YAML, byte for byte `yaml.dump(model_dump(...), Dumper=_DUMPER, sort_keys=True)`.

        A top-level block mapping with sorted keys is emitted as each key on its own, in order, so the large
        `spec:` entry comes from a cache keyed by the spec's canonical JSON and the small header keys around it
        are dumped on each call: the operator renders a stage config for every new stage and sizes the largest
        one on every spec check, mostly for the same spec (tests/api/test_stage_yaml.py checks the identity)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"spec"})
        before = {k: v for k, v in data.items() if k < "spec"}
        after = {k: v for k, v in data.items() if k > "spec"}
        return _dump(before) + spec_entry(spec_json(self.spec)) + _dump(after)

    @classmethod
    def load(cls, path: str) -> "StageConfig":
        with open(path, encoding="utf-8") as fh:
            return cls.model_validate(yaml.safe_load(fh))


def spec_json(spec: CptSpec) -> str:
    """The spec's canonical JSON: equal for equal specs, what the caches of rendered specs are keyed by."""
    return json.dumps(spec.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=True)


def spec_entry(spec_json: str) -> str:
    """The `spec:` entry of a stage config, from `spec_json` (the same data as the spec's JSON-mode dump, so
    the same YAML): from the cache unless the spec is over SPEC_CACHE_MAX_BYTES."""
    return spec_yaml(spec_json) if len(spec_json) <= SPEC_CACHE_MAX_BYTES else _render_spec(spec_json)


@functools.lru_cache(maxsize=SPEC_YAML_CACHE)
def spec_yaml(spec_json: str) -> str:
    return _render_spec(spec_json)


def _render_spec(spec_json: str) -> str:
    # libyaml's emitter when PyYAML has it (~10x less CPU than PyYAML's own)
    return _dump({"spec": json.loads(spec_json)})


def _dump(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=True) if data else ""
