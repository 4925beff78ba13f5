"""The arrows of the architecture, checked by import-linter (contracts in pyproject.toml [tool.importlinter]).

core imports neither side; trainer imports no kopf/Kubernetes/operator; the operator imports no trainer and no ML
stack, transitively; the planner is pure; in kube/ only the kopf adapter imports kopf, the controller does not (nor
the adapter), and the REST layer imports no controller, storage, children or planner. The second half breaks
contracts on purpose, in a copy of the sources, to show the check can fail. No module imports kopf's private
`kopf._...` (import-linter cannot name an external package's subpackage, so an AST scan checks it).
"""

import ast
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
    assert "0 broken" in result.stdout and "8 kept" in result.stdout, result.stdout[-2000:]


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
    ("cpt_operator/kube/children.py", "import kopf  # noqa", ["only kube.kopf_adapter imports kopf"]),
    ("cpt_operator/kube/controller/wake.py", "def _sneaky():\n    import kopf  # noqa",
     ["only kube.kopf_adapter imports kopf", "the controller imports no kopf"]),
    ("cpt_operator/kube/controller/state.py", "from cpt_operator.kube import kopf_adapter  # noqa",
     ["the controller imports no kopf"]),
    ("cpt_operator/kube/rest/client.py", "from cpt_operator.kube.controller import state  # noqa",
     ["the REST client imports no controller"]),
    ("cpt_operator/kube/rest/watch.py", "from cpt_operator.kube import children  # noqa",
     ["the REST client imports no controller"]),
    ("cpt_operator/kube/rest/paths.py", "from cpt_core.storage import scrub  # noqa",
     ["the REST client imports no controller"]),
])
def test_a_contract_broken_on_purpose_fails(copy_of_sources, module, code, broken):
    _append(copy_of_sources / module, code)
    result = lint(copy_of_sources, pythonpath=str(copy_of_sources))
    assert result.returncode != 0, result.stdout[-3000:]
    lines = [ln for ln in result.stdout.splitlines()  # "... BROKEN", or "... BROKEN (1 ignored import)"
             if ln.rstrip().endswith("BROKEN") or "BROKEN (" in ln]
    for name in broken:
        assert any(name in ln for ln in lines), (name, lines)


def _private_kopf_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.startswith("kopf._")]
    return found


def test_no_module_imports_kopf_internals():
    """kopf is pinned, but its private modules (kopf._cogs, ...) may change in any release: nothing of the house
    may import them (the informer reads its own watch streams, kube/rest/watch.py)."""
    files = [p for folder in ("core", "operator", "trainer", "tests", "bench/operator_scale")
             for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts]
    assert len(files) > 100
    assert [hit for p in files for hit in _private_kopf_imports(p)] == []
