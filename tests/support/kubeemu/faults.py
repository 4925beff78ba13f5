"""What a test can inject into the emulator (faults) and read back from it (stats)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from . import semantics as sem


@dataclass
class Fault:
    """Fail matching requests. action: create|update|replace|delete|watch|list|fetch|*.

    applied=False: rejected before anything changes. applied=True: the write is applied, then the reply is an
    error (a timeout at a proxy, a dropped connection): the client must not assume that failure means "not
    done". agents: only requests whose User-Agent starts with one of these (the operator's, not the test's).
    """

    action: str = "*"
    plural: str = "*"
    status: int = 500
    times: int = 1  # how many requests to fail; -1 = forever
    probability: float = 1.0
    subresource: Optional[str] = "*"
    applied: bool = False
    agents: Optional[tuple[str, ...]] = None

    def matches(self, action: str, path: sem.Path, agent: str = "") -> bool:
        return (self.times != 0 and self.action in ("*", action) and self.plural in ("*", path.plural)
                and (self.subresource == "*" or self.subresource == path.subresource)
                and (self.agents is None or agent.startswith(self.agents)))


@dataclass
class Stats:
    creates: list = field(default_factory=list)  # (plural, namespace, name, uid) of every successful create
    lists: list = field(default_factory=list)  # (plural, namespace, fieldSelector) of every LIST
    faults_injected: int = 0
    faults_applied: int = 0  # of those, writes that were applied before the error reply
    watches_expired: int = 0  # watches answered 410 Expired
    watches_dropped: int = 0
