"""The arrows of the architecture, checked by import-linter (contracts in pyproject.toml [tool.importlinter]).

core imports neither side; trainer imports no kopf/Kubernetes/operator; the operator imports no trainer and no ML
stack, transitively; the planner is pure. The second half breaks contracts on purpose, in a copy of the sources,
to show the check can fail.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = str(Path(sys.executable).parent / "lint-imports")
PACKAGES = {"cpt_core": "core", "cpt_operator": "operator", "cpt_trainer": "trainer"}


def lint(cwd: Path, pythonpath: str = "") -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": pythonpath}
    return subprocess.run([LINT, "--no-cache", str(cwd / "pyproject.toml")], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_tree_keeps_every_contract():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout and "6 kept" in result.stdout, result.stdout[-2000:]


@pytest.fixture
def copy_of_sources(tmp_path):
    """The three packages and the contracts, copied; PYTHONPATH puts the copies before the installed ones."""
    for package, folder in PACKAGES.items():
        shutil.copytree(ROOT / folder / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _append(path: Path, code: str) -> None:
    path.write_text(path.read_text() + "\n\n" + code + "\n")


@pytest.mark.parametrize("module, code, broken", [
    ("cpt_operator/planner/position.py", "def _sneaky():\n    from cpt_trainer import stages  # noqa",
     ["the operator imports nothing of the trainer", "the planner is pure"]),
    ("cpt_operator/local/report.py", "import torch  # noqa", ["the operator imports nothing of the trainer"]),
    ("cpt_operator/planner/plan.py", "import boto3  # noqa", ["the planner is pure"]),
    ("cpt_trainer/rif.py", "from cpt_operator.planner import names  # noqa", ["the trainer imports no kopf"]),
    ("cpt_core/forgetting.py", "import cpt_trainer  # noqa", ["core is the contract"]),
    ("cpt_operator/kube/children.py", "import kopf  # noqa", ["only handlers and informer import kopf"]),
])
def test_a_contract_broken_on_purpose_fails(copy_of_sources, module, code, broken):
    _append(copy_of_sources / module, code)
    result = lint(copy_of_sources, pythonpath=str(copy_of_sources))
    assert result.returncode != 0, result.stdout[-3000:]
    lines = [ln for ln in result.stdout.splitlines() if ln.rstrip().endswith("BROKEN")]
    for name in broken:
        assert any(name in ln for ln in lines), (name, lines)
