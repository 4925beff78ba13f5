"""The accuracy matrix and the continual-learning metrics over it (docs/design.md). Pure Python: no torch, no I/O.

The one place they are computed: the planner (status), the local report and the Prometheus gauges all call these.

Conventions
-----------
`matrix[i][j - 1]` is the accuracy on task j (1-based) after training task i; row 0 is the base model before any
training. Rows are 0..T, each with T columns (one per task in spec order). A cell may be None (not evaluated yet,
or not applicable); averages skip None cells and a metric with nothing to average is None (e.g. BWT after task 1).
Rows shorter than T are treated as padded with None.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

Matrix = Sequence[Sequence[Optional[float]]]


def accuracy_rows(committed: Mapping[int, Any], tasks: Sequence[str], benchmarks: Sequence[str]
                  ) -> tuple[list[list[Optional[float]]], list[list[Optional[float]]]]:
    """(matrix, general) from committed tasks (anything with an `eval` dict: {"tasks": {...}, "general": {...}}).

    Rows are the committed prefix 0..k in order (row 0: the base model); a task or benchmark missing from a row's
    eval is None.
    """
    matrix: list[list[Optional[float]]] = []
    general: list[list[Optional[float]]] = []
    index = 0
    while index in committed:
        row = committed[index].eval or {}
        scores, bench = row.get("tasks") or {}, row.get("general") or {}
        matrix.append([None if scores.get(n) is None else float(scores[n]) for n in tasks])
        general.append([None if bench.get(b) is None else float(bench[b]) for b in benchmarks])
        index += 1
    return matrix, general


def cell(matrix: Matrix, i: int, j: int) -> Optional[float]:
    """a[i][j] with j 1-based, or None when the row/column is missing or not evaluated."""
    if i < 0 or j < 1 or i >= len(matrix):
        return None
    row = matrix[i]
    if row is None or j - 1 >= len(row):
        return None
    value = row[j - 1]
    return None if value is None else float(value)


def _mean(values: list[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _diff(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None else a - b


def average_accuracy(matrix: Matrix, i: int) -> Optional[float]:
    """AA after task i: mean over j <= i of a[i][j]. For i = 0 (base model) there are no tasks seen: None."""
    return _mean([cell(matrix, i, j) for j in range(1, i + 1)])


def backward_transfer(matrix: Matrix, i: int) -> Optional[float]:
    """BWT after task i: mean over j < i of (a[i][j] - a[j][j]). Negative means forgetting (the paper's "FM")."""
    return _mean([_diff(cell(matrix, i, j), cell(matrix, j, j)) for j in range(1, i)])


def forgetting(matrix: Matrix, i: int) -> Optional[float]:
    """Chaudhry forgetting after task i: mean over j < i of (max over l in [j, i) of a[l][j]) - a[i][j].

    Positive means forgetting. Rows l where a[l][j] is None are skipped in the max.
    """
    per_task = []
    for j in range(1, i):
        best = [cell(matrix, l, j) for l in range(j, i)]
        best = [v for v in best if v is not None]
        per_task.append(_diff(max(best), cell(matrix, i, j)) if best else None)
    return _mean(per_task)


def plasticity(matrix: Matrix) -> Optional[float]:
    """Learning gain: mean over tasks j (with both cells present) of a[j][j] - a[0][j]."""
    return _mean([_diff(cell(matrix, j, j), cell(matrix, 0, j)) for j in range(1, len(matrix))])


def general_drop(general: Matrix, i: int) -> Optional[float]:
    """Drop of general capability after task i: mean over benchmarks b of (g[0][b] - g[i][b]).

    `general[i][b]` is benchmark b's score after task i (row 0: base model). Positive means the general skill
    got worse; negative means it improved.
    """
    if not general or i >= len(general):
        return None
    width = max(len(general[0] or []), len(general[i] or []))
    return _mean([_diff(cell(general, 0, b), cell(general, i, b)) for b in range(1, width + 1)])


def regressions(matrix: Matrix, i: int, max_drop: float) -> dict[int, float]:
    """Tasks j < i whose accuracy after task i is more than max_drop below their best so far: {j: drop}.

    This is the forgetting guard (spec.forgetting.maxDrop): "best so far" is max over l in [j, i) of a[l][j].
    """
    out: dict[int, float] = {}
    for j in range(1, i):
        best = [v for v in (cell(matrix, l, j) for l in range(j, i)) if v is not None]
        now = cell(matrix, i, j)
        if best and now is not None and max(best) - now > max_drop:
            out[j] = max(best) - now
    return out


def summary(matrix: Matrix, general: Optional[Matrix] = None) -> dict[str, Optional[float]]:
    """The status metrics after the last row of the matrix that has any value."""
    last = max((r for r, row in enumerate(matrix) if row and any(v is not None for v in row)), default=0)
    return {
        "average_accuracy": average_accuracy(matrix, last),
        "backward_transfer": backward_transfer(matrix, last),
        "forgetting": forgetting(matrix, last),
        "plasticity": plasticity(matrix),
        "general_drop": general_drop(general, last) if general else None,
    }
