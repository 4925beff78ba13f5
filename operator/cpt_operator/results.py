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
