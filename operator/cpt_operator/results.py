"""Committed task results from storage, as the planner's CommittedResult (no torch: storage is boto3 only)."""

from __future__ import annotations

from typing import Any

from cpt_trainer.storage import Store, load_committed, open_store_for_spec

from .observed import CommittedResult


def committed_results(store: Store) -> dict[int, CommittedResult]:
    """Every verified task of a run (manifest present, files with the recorded sizes)."""
    return {
        index: CommittedResult(index=t.index, name=t.name, spec_hash=t.spec_hash, eval=dict(t.eval or {}),
                               rif=t.rif, train=t.train, checkpoint=t.checkpoint)
        for index, t in load_committed(store).items()
    }


def read_committed(storage_spec: Any, **store_kwargs: Any) -> dict[int, CommittedResult]:
    """Open the run's storage from its spec (credentials from the environment) and read what is committed."""
    return committed_results(open_store_for_spec(storage_spec, **store_kwargs))


def run_stats(committed: dict[int, CommittedResult]) -> dict[int, dict]:
    """Per-task cost figures (for metrics and reports) from the committed rif.json / train.json / eval.json."""
    out: dict[int, dict] = {}
    for index, result in committed.items():
        rif, train, ev = result.rif or {}, result.train or {}, result.eval or {}
        durations = {stage: float(d["seconds"]) for stage, d in (("filter", rif), ("train", train), ("evaluate", ev))
                     if d.get("seconds") is not None}
        out[index] = {
            "rolloutTokens": int(rif.get("rollout_tokens") or 0) + int(train.get("rollout_tokens") or 0),
            "stageRolloutTokens": {"filter": int(rif.get("rollout_tokens") or 0),
                                   "train": int(train.get("rollout_tokens") or 0)},
            "learnerSteps": int(train.get("steps") or 0),
            "stageDurations": durations,
        }
    return out
