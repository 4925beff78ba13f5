"""One controller's phase of bench/operator_scale: what run.py measures, and the row it reports (JSON and tables)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Phase:
    who: str  # operator | baseline
    n: int
    latencies: list[float] = field(default_factory=list)  # seconds, one per run that got its children
    missing: int = 0
    create_span_s: float = 0.0  # first to last run created
    all_done_s: float = 0.0  # first run created -> last run's children
    cpu_s: float = 0.0  # the controller's CPU from the first create to the last child
    settle_cpu_pct: float = 0.0  # the controller's CPU while idle afterwards (resyncs), % of one core
    idle_s: float = 0.0  # the idle window: after every run has its children and a quiet tail
    idle_requests_per_s: float = 0.0  # API requests served while idle (every client: watches, resyncs)
    idle_requests: dict[str, int] = field(default_factory=dict)
    requests_until_done: int = 0  # API requests served from the first create until the last run's children
    jobs_started: int = 0  # stage jobs the training-operator stand-in marked Running before the idle window
    quiet_after_s: float = 0.0  # from the last children (and the jobs started) until the server was quiet
    peak_rss_mb: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)
    emulator_cpu_s: float = 0.0
    storage_cpu_s: float = 0.0  # the S3 server's (moto's) CPU over the same span: the claims and listings
    passes: Optional[float] = None  # operator only: reconcile passes, and their mean duration
    pass_mean_ms: Optional[float] = None
    log_warnings: int = 0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]

    def servers_floor_s(self) -> float:
        """No controller that makes these requests can finish sooner on this machine, even at zero CPU of its own:
        the emulator (one process, one event loop) must do its share, and both servers share the CPUs."""
        return max(self.emulator_cpu_s, (self.emulator_cpu_s + self.storage_cpu_s) / (os.cpu_count() or 1))

    def row(self) -> dict:
        total = sum(self.requests.values())
        return {"who": self.who, "n": self.n, "p50_s": self.pct(0.50), "p99_s": self.pct(0.99),
                "max_s": max(self.latencies) if self.latencies else math.nan, "missing": self.missing,
                "create_span_s": self.create_span_s, "all_done_s": self.all_done_s,
                "throughput_per_s": (self.n - self.missing) / self.all_done_s if self.all_done_s else math.nan,
                "cpu_s": self.cpu_s, "cpu_ms_per_run": 1000 * self.cpu_s / self.n,
                "settle_cpu_pct": self.settle_cpu_pct, "peak_rss_mb": self.peak_rss_mb,
                "api_requests_per_run": total / (self.n + 1), "emulator_cpu_s": self.emulator_cpu_s,
                "storage_cpu_s": self.storage_cpu_s, "servers_floor_s": self.servers_floor_s(),
                "requests_until_done_per_run": self.requests_until_done / self.n, "idle_s": self.idle_s,
                "idle_requests_per_s": self.idle_requests_per_s, "idle_requests": self.idle_requests,
                "passes_per_run": self.passes, "pass_mean_ms": self.pass_mean_ms, "requests": self.requests,
                "log_warnings": self.log_warnings, "jobs_started": self.jobs_started,
                "quiet_after_s": self.quiet_after_s}
