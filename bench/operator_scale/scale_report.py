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
    ("controller peak RSS (MB)", "peak_rss_mb", "{:.0f}"),
    ("API requests per run, first create -> last children", "requests_until_done_per_run", "{:.3f}"),
    ("API requests per run", "api_requests_per_run", "{:.1f}"),
    ("stage jobs marked Running, then quiet after (s)", "quiet_after_s", "{:.1f}"),
    ("idle window (s)", "idle_s", "{:.0f}"),
    ("controller CPU when idle (% of a core)", "settle_cpu_pct", "{:.2f}"),
    ("API requests/s when idle (all clients)", "idle_requests_per_s", "{:.3f}"),
    ("emulator CPU until done (s)", "emulator_cpu_s", "{:.2f}"),
    ("S3 server (moto) CPU until done (s)", "storage_cpu_s", "{:.2f}"),
    ("servers' floor: max(emulator, (emulator + S3) / CPUs) (s)", "servers_floor_s", "{:.2f}"),
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


GOAL_RATIO, GOAL_REQUESTS, GOAL_IDLE_CPU = 1.5, 4.0, 2.0


def verdict(op: dict, base: dict) -> str:
    """Issue 16's goals, each met or MISSED as measured in this invocation."""
    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"
    ratio = op["p99_s"] / base["p99_s"] if base["p99_s"] else math.inf
    goals = [
        f"p99 {op['p99_s']:.2f} s (goal <= {GOAL_P99_S:g} s: {mark(op['p99_s'] <= GOAL_P99_S)})",
        f"p99 / bare client {ratio:.2f}x (goal <= {GOAL_RATIO:g}x: {mark(ratio <= GOAL_RATIO)})",
        f"requests per run until all children exist {op['requests_until_done_per_run']:.3f} (goal <= "
        f"{GOAL_REQUESTS:g}: {mark(op['requests_until_done_per_run'] <= GOAL_REQUESTS)})",
        f"idle {op['idle_requests_per_s']:.3f} requests/s and {op['settle_cpu_pct']:.2f}% of a core (goal 0 "
        f"requests/s and < {GOAL_IDLE_CPU:g}%: {mark(op['idle_requests_per_s'] == 0)} / "
        f"{mark(op['settle_cpu_pct'] < GOAL_IDLE_CPU)})",
        f"peak RSS {op['peak_rss_mb']:.0f} MB (goal <= {GOAL_RSS_MB:g} MB: {mark(op['peak_rss_mb'] <= GOAL_RSS_MB)})",
    ]
    return "; ".join(goals) + ". " + floor_note(op, base)


def floor_note(op: dict, base: dict) -> str:
    """What the servers alone allow on this machine: a controller of zero CPU making the operator's requests."""
    floor, done = op["servers_floor_s"], base["all_done_s"]
    if not (done and floor == floor):
        return ""
    return (f"Servers' floor: a controller that cost no CPU itself but made the operator's requests (its S3 claims "
            f"included) would need >= {floor:.2f} s from the first create to the last children on this machine, "
            f"{floor / done:.2f}x the bare client's {done:.2f} s.")


def curve_table(curve: dict[int, dict[str, dict]]) -> str:
    """Per size: p99, CPU and requests per run, RSS, operator vs bare client."""
    lines = ["| runs | p99 op / bare (s) | ratio | CPU per run op / bare (ms) | requests per run op / bare | "
             "peak RSS op / bare (MB) | first create -> last children op / bare (s) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for n in sorted(curve):
        op, base = curve[n]["operator"], curve[n]["baseline"]
        ratio = op["p99_s"] / base["p99_s"] if base["p99_s"] else math.nan
        lines.append(f"| {n} | {op['p99_s']:.2f} / {base['p99_s']:.2f} | {ratio:.2f}x | "
                     f"{op['cpu_ms_per_run']:.2f} / {base['cpu_ms_per_run']:.2f} | "
                     f"{op['api_requests_per_run']:.2f} / {base['api_requests_per_run']:.2f} | "
                     f"{op['peak_rss_mb']:.0f} / {base['peak_rss_mb']:.0f} | "
                     f"{op['all_done_s']:.1f} / {base['all_done_s']:.1f} |")
    return "\n".join(lines)
