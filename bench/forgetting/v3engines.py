"""The pilot's engine check (PROTOCOL-v3.md addendum of 2026-11-30, post hoc): `cpt run` scored the GRPO-family
rows of the pilot with vLLM and the base row and every SFT row with hf, so the pilot's differences mix engines.
This phase (`run.py --protocol pilot --phase engine-check`) re-scores with hf every pilot row that vLLM scored (the
same checkpoint, eval sets, max tokens, greedy) and scores the base row once with vLLM, through the product's own
evaluation (v3engine_score.py, in .venv-vllm under the pilot's code snapshot); then it compares the two engines on
the same weights and recomputes every pilot claim with all rows scored by hf (the same statistics code).

Cached in WORK/engine-check/s<seed>/<run>/row<i>-<engine>.json: a finished score is never redone; it is reused
only under the same code snapshot (recorded, like done.json's) and while the row it re-scores is unchanged (the
sha256 of that row's eval.json is recorded)."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Optional

import cptbench as cb
from runs import code_id

HERE = Path(__file__).resolve().parent
SCORER = HERE / "v3engine_score.py"
VLLM_PYTHON = HERE.parents[1] / ".venv-vllm" / "bin" / "python"
OTHER = {"hf": "vllm", "vllm": "hf"}


def _runs(part: dict) -> list[dict]:
    """Every finished run one seed's pilot report reads (full arms, both runs of each matched sequence), once."""
    runs = [r for r in part["full"].values() if r is not None and r.get("phase") == "Succeeded"]
    for mm in part["matched"].values():
        for arm, m in (mm or {}).items():
            if arm != "steps" and m:
                runs += [m[k] for k in ("first", "second") if k in m]
    seen, out = set(), []
    for r in runs:
        if r["run"]["dir"] not in seen:
            seen.add(r["run"]["dir"])
            out.append(r)
    return out


def admission_runs(work: Path, adm: dict) -> list[dict]:
    """The admission runs behind the pilot's admission table (each candidate's sft and grpo run, cached)."""
    from runs import read_run

    out = []
    for task in adm["table"]:
        for arm in ("sft", "grpo"):
            d = work / "admission" / f"{task}-{arm}"
            done = d / "done.json"
            if done.is_file() and json.loads(done.read_text()).get("phase") == "Succeeded":
                out.append(read_run(dict(json.loads(done.read_text()), dir=str(d))))
    return out


def jobs(arms: dict, adm_runs: list) -> list[dict]:
    """(group, run, row, engine) to score: hf for every row vLLM scored (arms and admission runs); vLLM for the base
    row of each seed (row 0 of the first full-budget run: the full arms' row 0 holds both tasks and every probe)."""
    out = []
    groups = [(f"s{seed}", _runs(part)) for seed, part in sorted(arms.items())] + [("admission", adm_runs)]
    for group, runs in groups:
        for r in runs:
            out += [{"group": group, "run": r, "row": i, "engine": "hf"} for i, ev in enumerate(r["evals"])
                    if ev and ev.get("engine") == "vllm"]
        base = next((r for r in runs if r["evals"] and r["evals"][0] and r["evals"][0].get("engine") == "hf"
                     and len(r["evals"]) == len(r["tasks"]) + 1 > 2), None)
        if base is not None and group != "admission":
            out.append({"group": group, "run": base, "row": 0, "engine": "vllm"})
    return out


def _row_file(run: dict, row: int) -> Path:
    names = ["base"] + run["tasks"]
    return Path(run["run"]["dir"]) / "out" / "tasks" / f"{row}-{names[row]}" / "eval.json"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_file(work: Path, job: dict) -> Path:
    return (work / "engine-check" / job["group"] / Path(job["run"]["run"]["dir"]).name
            / f"row{job['row']}-{job['engine']}.json")


def _code(meta: dict) -> str:
    parent = Path(meta.get("code", "")).parent.name
    return parent if parent.startswith("code-") else "working tree"


def load(work: Path, job: dict) -> Optional[dict]:
    """The cached score of a job, when it was made under this code and the row it re-scores is unchanged."""
    path = cache_file(work, job)
    if not path.is_file():
        return None
    res = json.loads(path.read_text())
    meta = res.get("meta", {})
    if _code(meta) != code_id() or meta.get("source_eval_sha256") != _sha(_row_file(job["run"], job["row"])):
        return None
    return res


def run_jobs(work: Path, nice: int, todo: list[dict]) -> None:
    """Scores what is not cached, one at a time (in .venv-vllm, under the code snapshot cptbench.use_code set)."""
    if not VLLM_PYTHON.exists():
        raise RuntimeError(f"the engine check needs the product's vLLM venv ({VLLM_PYTHON})")
    pending = [j for j in todo if load(work, j) is None]
    print(f"  engine check: {len(todo) - len(pending)} of {len(todo)} scores cached", flush=True)
    for k, job in enumerate(pending, 1):
        out = cache_file(work, job)
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = cb.nice_prefix(nice) + [str(VLLM_PYTHON), str(SCORER), job["run"]["run"]["dir"], str(job["row"]),
                                      job["engine"], str(out)]
        t0 = time.monotonic()
        with open(out.with_suffix(".log"), "w", encoding="utf-8") as log:
            code = subprocess.run(cmd, env=cb.ENV, stdout=log, stderr=subprocess.STDOUT).returncode
        if code != 0 or not out.is_file():
            tail = out.with_suffix(".log").read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(f"engine check {out} exited {code}:\n" + "\n".join(tail))
        res = json.loads(out.read_text())  # tie the score to the row it re-scores
        res["meta"]["source_eval_sha256"] = _sha(_row_file(job["run"], job["row"]))
        res["meta"]["wallSeconds"] = round(time.monotonic() - t0, 1)
        out.write_text(json.dumps(res, indent=1))
        print(f"  engine check {k}/{len(pending)}: {out.parent.name} row {job['row']} {job['engine']}: "
              f"{time.monotonic() - t0:.0f} s", flush=True)


def collect(work: Path, nice: int, arms: dict, adm: dict, run: bool) -> dict:
    """run: score what is missing first. Returns {"jobs": n, "pairs": [...], "hf_arms": arms with every row scored
    by hf, or None until every job is done, "admission": the admission table's grpo accuracies with hf}."""
    adm_runs = admission_runs(work, adm)
    todo = jobs(arms, adm_runs)
    if run and todo:
        run_jobs(work, nice, todo)
    pairs, hf_arms, adm_hf = [], copy.deepcopy(arms), {}
    by_dir = {r["run"]["dir"]: r for part in hf_arms.values() for r in _runs(part)}
    for job in todo:
        res = load(work, job)
        if res is None:
            continue
        orig = job["run"]["evals"][job["row"]]
        pairs.append({"group": job["group"], "run": Path(job["run"]["run"]["dir"]).name, "row": job["row"],
                      job["engine"]: res, OTHER[job["engine"]]: orig})
        if job["engine"] == "hf" and job["group"] == "admission":
            task = job["run"]["tasks"][0]
            adm_hf[task] = dict(adm_hf.get(task, {}), **{Path(job["run"]["run"]["dir"]).name.split("-")[-1]:
                                                        res["tasks"][task]})
        elif job["engine"] == "hf":
            by_dir[job["run"]["run"]["dir"]]["evals"][job["row"]] = res
    complete = bool(todo) and len(pairs) == len(todo)
    return {"jobs": len(todo), "pairs": pairs, "hf_arms": hf_arms if complete else None, "admission": adm_hf,
            "reproduced": reproduced(arms, hf_arms)}


def reproduced(arms: dict, hf_arms: dict) -> dict:
    """A check of the re-scoring itself: a matched sequence's second run starts from its first run's checkpoint,
    and the pilot scored that checkpoint with hf as the second run's row 0; the hf re-score of the first run's
    row 1 should agree with it prompt for prompt (on the sets both rows hold)."""
    n = same = 0
    seen = set()
    for seed, part in arms.items():
        for mm in part["matched"].values():
            for arm, m in (mm or {}).items():
                if arm == "steps" or not m or "second" not in m or m["first"]["run"]["dir"] in seen:
                    continue
                seen.add(m["first"]["run"]["dir"])
                rescored = next(r for r in _runs(hf_arms[seed]) if r["run"]["dir"] == m["first"]["run"]["dir"])
                old, new = m["first"]["evals"][1], rescored["evals"][1]
                row0 = m["second"]["evals"][0]
                if old.get("engine") != "vllm" or new.get("engine") != "hf" or row0.get("engine") != "hf":
                    continue
                for k in set(new["correct"]) & set(row0["correct"]):
                    n += len(row0["correct"][k])
                    same += sum(x == y for x, y in zip(new["correct"][k], row0["correct"][k]))
    return {"prompts": n, "same": same}
