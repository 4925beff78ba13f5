"""Metric functions against hand-computed values (docs/design.md, Metrics)."""

import sys

import pytest

from cpt_core import forgetting as F

# rows: 0 = base, 1..3 = after task i; columns: tasks 1..3
M = [
    [0.2, 0.3, 0.4],
    [0.8, 0.3, 0.5],
    [0.6, 0.9, 0.4],
    [0.5, 0.7, 1.0],
]


def test_average_accuracy():
    assert F.average_accuracy(M, 0) is None
    assert F.average_accuracy(M, 1) == pytest.approx(0.8)
    assert F.average_accuracy(M, 2) == pytest.approx((0.6 + 0.9) / 2)
    assert F.average_accuracy(M, 3) == pytest.approx((0.5 + 0.7 + 1.0) / 3)


def test_backward_transfer():
    assert F.backward_transfer(M, 1) is None
    assert F.backward_transfer(M, 2) == pytest.approx(0.6 - 0.8)
    # j=1: 0.5-0.8 = -0.3 ; j=2: 0.7-0.9 = -0.2
    assert F.backward_transfer(M, 3) == pytest.approx(-0.25)


def test_forgetting_uses_best_earlier_row():
    assert F.forgetting(M, 1) is None
    assert F.forgetting(M, 2) == pytest.approx(0.8 - 0.6)
    # j=1: max(0.8, 0.6) - 0.5 = 0.3 ; j=2: max(0.9) - 0.7 = 0.2
    assert F.forgetting(M, 3) == pytest.approx(0.25)
    # forgetting differs from -BWT when a task peaks after its own row
    m = [[0, 0], [0.5, 0.0], [0.9, 0.6], [0.4, 0.6]]
    assert F.backward_transfer(m, 3) == pytest.approx(((0.4 - 0.5) + (0.6 - 0.6)) / 2)
    assert F.forgetting(m, 3) == pytest.approx(((0.9 - 0.4) + 0.0) / 2)


def test_plasticity():
    # (0.8-0.2) + (0.9-0.3) + (1.0-0.4) = 1.8 -> 0.6
    assert F.plasticity(M) == pytest.approx(0.6)
    assert F.plasticity(M[:2]) == pytest.approx(0.6)
    assert F.plasticity([[0.1, 0.2]]) is None


def test_none_cells_are_skipped():
    m = [[0.2, None], [0.8, None], [None, 0.9]]
    assert F.average_accuracy(m, 2) == pytest.approx(0.9)
    assert F.backward_transfer(m, 2) is None
    assert F.forgetting(m, 2) is None
    assert F.plasticity(m) == pytest.approx(0.6)
    # short rows are padded with None; missing rows give None
    assert F.average_accuracy([[0.1], [0.5]], 1) == pytest.approx(0.5)
    assert F.average_accuracy(M, 7) is None


def test_general_drop_and_regressions():
    g = [[0.9, 0.5], [0.8, 0.5], [0.6, 0.7]]
    assert F.general_drop(g, 0) == pytest.approx(0.0)
    assert F.general_drop(g, 1) == pytest.approx(0.05)
    assert F.general_drop(g, 2) == pytest.approx((0.3 - 0.2) / 2)
    assert F.general_drop([], 1) is None
    assert F.regressions(M, 3, 0.25) == {1: pytest.approx(0.3)}
    assert F.regressions(M, 3, 0.1) == {1: pytest.approx(0.3), 2: pytest.approx(0.2)}


def test_summary():
    s = F.summary(M, [[0.9], [0.8], [0.8], [0.7]])
    assert s["average_accuracy"] == pytest.approx(2.2 / 3)
    assert s["backward_transfer"] == pytest.approx(-0.25)
    assert s["forgetting"] == pytest.approx(0.25)
    assert s["plasticity"] == pytest.approx(0.6)
    assert s["general_drop"] == pytest.approx(0.2)


def test_no_torch_import():
    assert "torch" not in F.__dict__
    import subprocess
    code = "import sys, cpt_core.forgetting; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
