"""A fork server for `cpt run`: stage processes forked from a process that has already imported the trainer.

Why: every stage of a local run is its own process (as every stage on a cluster is its own pod), and each one
spent ~4-5 s importing torch, transformers and TRL, more than half of the example run's wall time. The server
imports them once; each stage is then a fork of it: still a separate process (its memory is freed, a crash or a
Ctrl-C stays in it), with the trainer already loaded.

Protocol (lines on stdin/stdout, one stage at a time, as `cpt run` runs them):
  server -> `CPT_FORKSERVER_READY`
  client -> {"argv": [...cpt-trainer args], "cwd": "/dir"}
  server -> `CPT_FORKSERVER_PID <pid>`, then the stage's stdout+stderr as it comes, then `CPT_FORKSERVER_EXIT <code>`
            (negative: killed by that signal).
The server ignores SIGINT (a Ctrl-C reaches the whole process group; the stage handles it) and ends at EOF on
stdin. Only this process forks, and it holds no threads of its own, so the fork is safe.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback

from cpt_core.protocol import FORKSERVER_EXIT as EXIT, FORKSERVER_PID as PID, FORKSERVER_READY as READY
from cpt_core.protocol import die_with_parent


def preload() -> None:
    """Import what every stage imports, so a forked stage starts with it loaded."""
    from cpt_trainer import cli

    cli._env_defaults()
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
    from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer  # noqa: F401

    from cpt_trainer import evaluate, rif, stages  # noqa: F401
    from cpt_trainer.learners import grpo, sft  # noqa: F401
    from cpt_trainer.rollout import hf  # noqa: F401


def _write(data: bytes) -> None:
    while data:
        data = data[os.write(1, data):]


def _child(request: dict, out: int) -> None:
    """In the forked stage: wire its output to the pipe, restore Ctrl-C, run the CLI, exit with its code."""
    code = 1
    try:
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # the server's stdin carries requests, not for the stage
        os.close(null)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        die_with_parent()
        os.chdir(request["cwd"])
        sys.path.insert(0, request["cwd"])  # like `python -m` run there: reward modules next to the spec import
        from cpt_trainer import cli

        sys.argv = ["cpt-trainer", *request["argv"]]
        code = cli.main(list(request["argv"]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - everything must end in os._exit, never back in the server's loop
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) else 1)


def serve_one(request: dict) -> int:
    """Fork one stage, relay its output until it closes, reap it; returns its exit code."""
    read, write = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        _child(request, write)
    os.close(write)
    _write(f"{PID}{pid}\n".encode())
    last = b"\n"
    while True:
        chunk = os.read(read, 65536)
        if not chunk:
            break
        _write(chunk)
        last = chunk[-1:]
    os.close(read)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    _write((b"" if last == b"\n" else b"\n") + f"{EXIT}{code}\n".encode())
    return code


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()
    preload()
    _write(f"{READY}\n".encode())
    for line in sys.stdin:
        if line.strip():
            serve_one(json.loads(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
