"""Suite-wide: the longest test files are collected first, so that `make test`'s two xdist workers (one file at a
time each, --dist loadfile) start them early and finish together, instead of one worker running a 4-minute
file alone at the end. Order only: nothing is added, skipped or changed."""

from __future__ import annotations

# Measured on a fresh-clone `make test` (--durations, 2026-12-07), longest first; every other file keeps its place.
LONGEST_FIRST = (
    "tests/trainer/test_step_checkpoints_ranks.py",
    "tests/bench/test_bench_quick.py",
    "tests/local/test_cpt_run.py",
    "tests/local/test_no_signal.py",
    "tests/operator/test_resilience.py",
    "tests/realmodel/test_import_gguf.py",
    "tests/trainer/test_step_checkpoints.py",
    "tests/bench/test_forgetting_v4.py",
    "tests/local/test_tracking.py",
    "tests/trainer/test_deepspeed.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    root = config.rootpath

    def key(item) -> int:
        try:
            return rank.get(item.path.relative_to(root).as_posix(), len(rank))
        except ValueError:
            return len(rank)

    items.sort(key=key)  # stable: tests keep their order within a file and among the other files
