"""Deterministic names of a run's stage jobs and rollout servers, and private names of its other children (pure).

`<run>-<task-index>-<stage>[-r<attempt>]`: a restarted executor finds what it started, and a second start of the
same stage is "already exists", not a duplicate. Both executors use these names (jobs on a cluster, processes and
their log files locally).
"""

from __future__ import annotations

import hashlib
import hmac

# Pods of a PyTorchJob are named <job>-worker-<n>; keep room for that suffix inside a 63-char DNS label.
MAX_CHILD_NAME = 50


def child_name(run: str, index: int, suffix: str) -> str:
    """`<run>-<index>-<suffix>`, shortened with a stable hash when it would not fit a DNS label."""
    name = f"{run}-{index}-{suffix}"
    if len(name) <= MAX_CHILD_NAME:
        return name
    digest = hashlib.sha256(run.encode()).hexdigest()[:6]
    tail = f"-{digest}-{index}-{suffix}"
    return run[: MAX_CHILD_NAME - len(tail)].rstrip("-") + tail


def job_name(run: str, index: int, stage: str, attempt: int) -> str:
    return child_name(run, index, stage if attempt == 0 else f"{stage}-r{attempt}")


def rollout_name(run: str, index: int) -> str:
    return child_name(run, index, "rollout")


def private_name(base: str, key: bytes, run_uid: str) -> str:
    """`<base>-<10 hex>`: a child whose name must not be guessable from the run's name (the stage ConfigMap, the
    rollout-key Secret), so nobody can take it before the operator creates it. The suffix is an HMAC of the
    run's uid and `base` under the operator's key: the same for every pass and restart, unknown to anyone else."""
    digest = hmac.new(key, f"{run_uid}\n{base}".encode(), hashlib.sha256).hexdigest()[:10]
    return f"{base}-{digest}"
