"""What a test can inject into the emulator (faults) and read back from it (stats)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from . import semantics as sem


@dataclass
class Fault:
    """Fail matching requests without applying them. action: create|update|replace|delete|watch|list|fetch|*."""

    action: str = "*"
    plural: str = "*"
    status: int = 500
    times: int = 1  # how many requests to fail; -1 = forever
    probability: float = 1.0
    subresource: Optional[str] = "*"

    def matches(self, action: str, path: sem.Path) -> bool:
        return (self.times != 0 and self.action in ("*", action) and self.plural in ("*", path.plural)
                and (self.subresource == "*" or self.subresource == path.subresource))


@dataclass
class Stats:
    creates: list = field(default_factory=list)  # (plural, namespace, name, uid) of every successful create
    faults_injected: int = 0
    watches_dropped: int = 0
