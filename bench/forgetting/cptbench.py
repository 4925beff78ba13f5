"""Shared plumbing of the training benchmarks (bench/forgetting, bench/rif_cost).

Everything goes through the product: a ContinualPostTraining YAML per run, executed with `cpt run FILE` as a
subprocess (the same planner and stage processes a user gets), results read back from the run's report.json.
The multi-task baseline runs `cpt-trainer multitask --spec FILE --out DIR`.

`cpt run` itself, cached, is runs.py's (the one executor of every protocol); the multi-task baseline here is
reused when its spec file is byte-identical and its eval.json exists (the wall time of the original execution is
kept in bench.json next to it), so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import yaml

VENV_BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def use_code(rev: Optional[str], work: Path) -> str:
    """Run the product from a snapshot of git revision `rev` (trainer/, operator/ and, since the restructure, core/
    extracted with git archive into work/code-REV and put first on PYTHONPATH, in this process and every child), so
    edits in the working tree during a long benchmark cannot change what is measured. None: the working tree.
    Returns a description of the code measured, for RESULTS.md."""
    root = Path(__file__).resolve().parents[2]
    if rev is None:
        try:
            desc = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True,
                                  text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            desc = "unknown"
        return f"working tree at {desc}"
    sha = subprocess.run(["git", "rev-parse", rev], cwd=root, capture_output=True, text=True,
                         check=True).stdout.strip()
    dest = work / f"code-{sha[:12]}"
    tops = subprocess.run(["git", "ls-tree", "--name-only", sha], cwd=root, capture_output=True, text=True,
                          check=True).stdout.split()
    parts = [p for p in ("core", "trainer", "operator") if p in tops]  # core/ exists from the restructure on
    if not (dest / "trainer" / "cpt_trainer").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, *parts], cwd=root, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    paths = [str(dest / p) for p in parts]
    ENV["PYTHONPATH"] = os.pathsep.join(paths + ([ENV["PYTHONPATH"]] if ENV.get("PYTHONPATH") else []))
    for name in [m for m in sys.modules if m.split(".")[0] in ("cpt_core", "cpt_trainer", "cpt_operator")]:
        del sys.modules[name]
    sys.path[:0] = paths
    return f"git snapshot {sha[:12]} ({', '.join(p + '/' for p in parts)} via git archive)"


def tool(name: str) -> str:
    """A console script of this venv (cpt, cpt-trainer), falling back to PATH."""
    path = VENV_BIN / name
    return str(path) if path.exists() else name


def nice_prefix(nice: int) -> list[str]:
    return ["nice", "-n", str(nice)] if nice and sys.platform.startswith("linux") else []


# ------------------------------------------------------------------------------------------------ inputs

def build_base(out: Path, seed: int, steps: Optional[int], nice: int = 10, overrides: Optional[dict] = None) -> dict:
    """The tiny base model via `cpt-trainer build-base` (default recipe unless `steps`), skipped when out/ already
    holds one built with the same seed/steps. `overrides` (smoke runs only): BaseModelConfig fields set through
    the Python API instead (fields the trainer's recipe does not have are ignored), e.g. a short tail phase."""
    report = out / "build_report.json"
    if report.is_file():
        built = json.loads(report.read_text())
        cfg = built["config"]
        if cfg["seed"] == seed and (steps is None or cfg["steps"] == steps) and _same_recipe(built):
            return built
    t0 = time.monotonic()
    if overrides:
        code = ("import dataclasses, json, sys\n"
                "from cpt_trainer.tinymodel import BaseModelConfig, build_base\n"
                "names = {f.name for f in dataclasses.fields(BaseModelConfig)}\n"
                "kw = {k: v for k, v in json.loads(sys.argv[2]).items() if k in names}\n"
                "build_base(sys.argv[1], BaseModelConfig(**kw), probe=32)\n")
        cfg = dict(overrides, seed=seed, **({"steps": steps} if steps else {}))
        cmd = nice_prefix(nice) + [sys.executable, "-c", code, str(out), json.dumps(cfg)]
    else:
        cmd = nice_prefix(nice) + [tool("cpt-trainer"), "build-base", "--out", str(out), "--seed", str(seed),
                                   "--threads", "1"] + (["--steps", str(steps)] if steps else [])
    subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL)
    print(f"  built base {out} in {time.monotonic() - t0:.0f} s", flush=True)
    return json.loads(report.read_text())


@functools.lru_cache(maxsize=None)
def default_recipe_hash(seed: int) -> str:
    """The recipe hash of `cpt-trainer build-base --seed SEED` (default recipe) under the code measured (snapshot
    or working tree): sha256 of asdict(BaseModelConfig) plus the source of tinymodel.py and synthetic.py."""
    code = ("import json, sys\nfrom dataclasses import asdict\n"
            "from cpt_trainer.tinymodel import BaseModelConfig, recipe_hash\n"
            "print(recipe_hash(asdict(BaseModelConfig(seed=int(sys.argv[1])))))\n")
    return subprocess.run([sys.executable, "-c", code, str(seed)], env=ENV, capture_output=True, text=True,
                          check=True).stdout.strip().splitlines()[-1]


def cached_base(bases: Path, seed: int, nice: int = 10) -> tuple[Path, dict]:
    """Protocol v3's base cache: `cpt-trainer build-base --seed SEED` (default recipe) in bases/seedS-HASH, HASH =
    the recipe hash; a folder is reused only when its build_report.json records that same hash (a base of another
    recipe lives in another folder and is never picked up). Returns (folder, build report)."""
    digest = default_recipe_hash(seed)
    out = bases / f"seed{seed}-{digest}"
    report = out / "build_report.json"
    if report.is_file():
        built = json.loads(report.read_text())
        if built.get("recipe_hash") == digest and built["config"]["seed"] == seed:
            return out, built
    t0 = time.monotonic()
    tmp = bases / f".building-seed{seed}-{digest}"
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    cmd = nice_prefix(nice) + [tool("cpt-trainer"), "build-base", "--out", str(tmp), "--seed", str(seed),
                               "--threads", "1"]
    subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL)
    built = json.loads((tmp / "build_report.json").read_text())
    if built.get("recipe_hash") != digest:
        raise RuntimeError(f"base {tmp}: built under recipe hash {built.get('recipe_hash')}, expected {digest}")
    tmp.rename(out)  # only a finished build carries the cache name
    print(f"  built base {out} in {time.monotonic() - t0:.0f} s", flush=True)
    return out, built


def _same_recipe(built: dict) -> bool:
    """A cached base counts only when the code measured (snapshot or working tree) gives the recipe hash it was
    built under; a base from before recipe hashes (protocols v1/v2 reuse theirs as registered) is announced."""
    if "recipe_hash" not in built:
        print("  note: reusing a base built before recipe hashes (no check of its recipe)", flush=True)
        return True
    code = ("import json, sys\nfrom cpt_trainer.tinymodel import recipe_hash\n"
            "print(recipe_hash(json.loads(sys.argv[1])))\n")
    now = subprocess.run([sys.executable, "-c", code, json.dumps(built["config"])], env=ENV, capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()[-1]
    if now != built["recipe_hash"]:
        print(f"  base recipe changed ({built['recipe_hash']} -> {now}): rebuilding", flush=True)
    return now == built["recipe_hash"]


def write_datasets(directory: Path, tasks: list[str], general: list[str], seed: int, n_train: int,
                   n_eval: int) -> None:
    """Fresh training pools (the `train` pool, disjoint from what build-base pre-trained on) and eval sets."""
    from cpt_trainer import synthetic

    directory.mkdir(parents=True, exist_ok=True)
    for skill in tasks:
        synthetic.write_jsonl(synthetic.generate(skill, n_train, seed=seed, pool="train"),
                              str(directory / f"{skill}-train.jsonl"))
    for skill in set(tasks) | set(general):
        synthetic.write_jsonl(synthetic.generate(skill, n_eval, seed=seed, pool="eval"),
                              str(directory / f"{skill}-eval.jsonl"))


def spec_doc(name: str, base: Path, data: Path, run_dir: Path, method: str, tasks: list[str], general: list[str],
             seed: int, grpo: dict, sft: dict, rif: Optional[dict], evaluation: dict,
             no_signal: Optional[str] = None) -> dict:
    """A ContinualPostTraining resource; paths relative to the run directory (as a user writes them).
    `no_signal` (spec.noSignal) only when a protocol sets it, so the spec files of v1/v2 runs stay byte-identical."""
    from cpt_trainer import synthetic

    rel = lambda p: os.path.relpath(p, run_dir)  # noqa: E731
    spec = {
        "model": rel(base),
        "method": method,
        "seed": seed,
        "tasks": [{"name": t, "train": rel(data / f"{t}-train.jsonl"), "eval": rel(data / f"{t}-eval.jsonl"),
                   "reward": synthetic.REWARDS.get(t, "exact")} for t in tasks],
        "general": [{"name": g, "eval": rel(data / f"{g}-eval.jsonl"), "reward": synthetic.REWARDS.get(g, "exact")}
                    for g in general],
        "grpo": grpo,
        "sft": sft,
        "evaluation": evaluation,
        "rollout": {"engine": "hf"},
        "retry": {"limit": 0, "backoffSeconds": 0},
        "storage": {"uri": "out"},
    }
    if method == "rif-grpo" and rif:
        spec["rif"] = rif
    if no_signal:
        spec["noSignal"] = no_signal
    return {"apiVersion": "cpt.dev/v1alpha1", "kind": "ContinualPostTraining", "metadata": {"name": name},
            "spec": spec}


# ------------------------------------------------------------------------------------------------ running

def _write_if_changed(path: Path, text: str) -> bool:
    """Write text; True when the file was absent or different (then earlier results are stale)."""
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True


def _fresh(run_dir: Path) -> None:
    import shutil

    for child in ("out", "bench.json", "multitask", "cpt-run.log"):
        p = run_dir / child
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def run_multitask(run_dir: Path, doc: dict, nice: int = 10) -> dict:
    """`cpt-trainer multitask --spec cpt.yaml --out multitask/`; returns its summary plus train.json and wall time."""
    spec_file = run_dir / "cpt.yaml"
    changed = _write_if_changed(spec_file, yaml.safe_dump(doc, sort_keys=False))
    out, bench_file = run_dir / "multitask", run_dir / "bench.json"
    if changed:
        _fresh(run_dir)
    elif (out / "eval.json").is_file() and bench_file.is_file():
        return _multitask_result(out, json.loads(bench_file.read_text()), reused=True)
    cmd = nice_prefix(nice) + [tool("cpt-trainer"), "multitask", "--spec", str(spec_file), "--out", str(out)]
    t0 = time.monotonic()
    with open(run_dir / "cpt-run.log", "w", encoding="utf-8") as log:
        code = subprocess.run(cmd, env=ENV, stdout=log, stderr=subprocess.STDOUT, cwd=run_dir).returncode
    wall = time.monotonic() - t0
    if code != 0:
        tail = (run_dir / "cpt-run.log").read_text(errors="replace").splitlines()[-30:]
        raise RuntimeError(f"cpt-trainer multitask {spec_file} exited {code}:\n" + "\n".join(tail))
    extra = {"wallSeconds": round(wall, 2)}
    bench_file.write_text(json.dumps(extra))
    return _multitask_result(out, extra, reused=False)


def _multitask_result(out: Path, extra: dict, reused: bool) -> dict:
    ev = json.loads((out / "eval.json").read_text())
    train = json.loads((out / "train.json").read_text())
    return dict(extra, eval=ev, train={k: v for k, v in train.items() if k not in ("reward_curve", "loss")},
                reused=reused)


def run_all(jobs: list, parallel: int = 1) -> list:
    """Run zero-argument callables, one at a time (timings comparable) or `parallel` at once (smoke runs)."""
    if parallel <= 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(lambda job: job(), jobs))


# ------------------------------------------------------------------------------------------------ statistics

def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def mean_std(values: list) -> tuple[Optional[float], Optional[float]]:
    vals = [float(v) for v in values if finite(v)]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def fmt_ms(values: list, digits: int = 3, signed: bool = False) -> str:
    m, s = mean_std(values)
    if m is None:
        return "n/a"
    spec = f"{'+' if signed else ''}.{digits}f"
    return f"{m:{spec}} ± {s:.{digits}f}"


def ratio(a, b) -> Optional[float]:
    return a / b if finite(a) and finite(b) and b != 0 else None


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        torch_v = torch.__version__
    except ImportError:
        torch_v = "?"
    import transformers
    import trl

    return (f"{os.cpu_count()} CPU cores ({cpu}), Python {platform.python_version()}, torch {torch_v}, "
            f"transformers {transformers.__version__}, trl {trl.__version__}, OMP_NUM_THREADS=1, "
            f"load average at start {os.getloadavg()[0]:.1f}")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"
