"""The planner's output types (kept apart so executors and event helpers can import them cheaply)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .stage import StageConfig


@dataclass(frozen=True)
class ChildRef:
    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class PlanEvent:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    status: dict
    create: list[dict] = field(default_factory=list)
    patch: list[tuple[ChildRef, dict]] = field(default_factory=list)  # merge patches for existing children
    delete: list[ChildRef] = field(default_factory=list)
    events: list[PlanEvent] = field(default_factory=list)
    requeue_after: Optional[float] = None
    valid: bool = True
    stage_configs: dict[str, StageConfig] = field(default_factory=dict)  # job name -> config (local executor)
