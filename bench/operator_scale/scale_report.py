"""The tables and verdict bench/operator_scale prints and writes to RESULTS.md (pure formatting)."""

from __future__ import annotations

import math
from typing import Any

GOAL_P99_S, GOAL_RSS_MB = 2.0, 200.0

ROWS = [  # (label, key, format)
    ("time to first children p50 (s)", "p50_s", "{:.2f}"),
    ("time to first children p99 (s)", "p99_s", "{:.2f}"),
    ("time to first children max (s)", "max_s", "{:.2f}"),
    ("runs without children at the timeout", "missing", "{:d}"),
    ("creates issued over (s)", "create_span_s", "{:.2f}"),
    ("first create -> last children (s)", "all_done_s", "{:.2f}"),
    ("runs handled per second", "throughput_per_s", "{:.0f}"),
    ("controller CPU until done (s)", "cpu_s", "{:.2f}"),
    ("controller CPU per run (ms)", "cpu_ms_per_run", "{:.1f}"),
    ("controller CPU when idle after (% of a core)", "settle_cpu_pct", "{:.1f}"),
    ("controller peak RSS (MB)", "peak_rss_mb", "{:.0f}"),
    ("API requests per run", "api_requests_per_run", "{:.1f}"),
    ("emulator CPU until done (s)", "emulator_cpu_s", "{:.2f}"),
]


def fmt(spec: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return spec.format(value)


def table(op: dict, base: dict) -> str:
    lines = ["| | operator | baseline | operator / baseline |", "|---|---:|---:|---:|"]
    for label, key, spec in ROWS:
        a, b = op[key], base[key]
        ratio = f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"
        if key == "missing":
            ratio = ""
        lines.append(f"| {label} | {fmt(spec, a)} | {fmt(spec, b)} | {ratio} |")
    lines.append(f"| reconcile passes per run / mean pass (ms) | {fmt('{:.2f}', op['passes_per_run'])} / "
                 f"{fmt('{:.0f}', op['pass_mean_ms'])} | | |")
    return "\n".join(lines)


def requests_table(op: dict, base: dict, n: int) -> str:
    keys = sorted(set(op["requests"]) | set(base["requests"]), key=lambda k: -op["requests"].get(k, 0))
    lines = ["| request | operator per run | baseline per run |", "|---|---:|---:|"]
    for k in keys:
        lines.append(f"| {k} | {op['requests'].get(k, 0) / (n + 1):.2f} | {base['requests'].get(k, 0) / (n + 1):.2f} |")
    return "\n".join(lines)


def verdict(op: dict) -> str:
    p99_ok, rss_ok = op["p99_s"] <= GOAL_P99_S, op["peak_rss_mb"] <= GOAL_RSS_MB
    return (f"p99 {op['p99_s']:.2f} s (goal <= {GOAL_P99_S:g} s: {'met' if p99_ok else 'MISSED'}), "
            f"peak RSS {op['peak_rss_mb']:.0f} MB (goal <= {GOAL_RSS_MB:g} MB: {'met' if rss_ok else 'MISSED'})")
