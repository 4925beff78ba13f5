"""The stage contract between the planner and the trainer's stage entry points.

The planner writes a StageConfig into the stage ConfigMap (cluster) or a file (local); `cpt-trainer STAGE
--config FILE` reads it. Storage credentials are never part of it: they come from the environment.
"""

from __future__ import annotations

from typing import Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field

from cpt_core.api import SAMPLING_METHODS, STAGES, CptSpec, Stage

_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

STAGE_CONFIG_FILE = "stage.yaml"
BASE_TASK_NAME = "base"  # task index 0: the base model, evaluated before any training (row 0 of the matrix)


def stages_for(method: str, task_index: int) -> list[str]:
    """Stages of one task in order. Index 0 only evaluates the base model; the filter stage (rollouts) only for
    the sampling methods (rif-grpo, self-sft)."""
    filtered, trained, evaluated = STAGES
    if task_index == 0:
        return [evaluated]
    return ([filtered] if method in SAMPLING_METHODS else []) + [trained, evaluated]


class StageConfig(BaseModel):
    """Everything one stage process needs to know; the spec is carried whole so nothing drifts."""

    model_config = ConfigDict(extra="forbid")

    run: str = Field(description="Name of the ContinualPostTraining resource.")
    namespace: str = "default"
    stage: Stage
    task_index: int = Field(ge=0, description="1..T for tasks; 0 evaluates the base model.")
    attempt: int = Field(0, ge=0)
    spec: CptSpec
    spec_hash: str = Field(description="Hash of tasks[:task_index] and the training settings; see planner.")
    rollout_url: Optional[str] = Field(None, description="vLLM OpenAI-compatible server of this task, if any.")

    @property
    def task_name(self) -> str:
        return BASE_TASK_NAME if self.task_index == 0 else self.spec.tasks[self.task_index - 1].name

    def dump_yaml(self) -> str:
        # libyaml's emitter when PyYAML has it: the same YAML, ~10x less CPU (the operator renders a stage
        # config for every new stage and sizes the largest one on every spec check)
        return yaml.dump(self.model_dump(mode="json", by_alias=True, exclude_none=True), Dumper=_DUMPER,
                         sort_keys=True)

    @classmethod
    def load(cls, path: str) -> "StageConfig":
        with open(path, encoding="utf-8") as fh:
            return cls.model_validate(yaml.safe_load(fh))
