"""`uv pip install` into a venv, with pip's own configuration (indexes, find-links, constraints, certificate).

Why: `make install` with pip took ~3 minutes here (the vLLM venv as long again), nearly all of it pip's own work;
uv resolves the same pins in ~20 s. But uv does not read pip's configuration, and a machine's pip.conf is where
its package sources are declared (here: a local CPU torch wheel, local index mirrors, a constraints file). This
script reads what `pip config list` reports (files and PIP_* variables, the variables winning as in pip) and
passes the same settings to uv, so both tools install from the same places.

    python3 scripts/uv_pip.py UV VENV install|uninstall ARGS...
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

# pip option -> uv flag (each value of a whitespace-separated list gets its own flag)
LIST_FLAGS = {"find-links": "--find-links", "extra-index-url": "--extra-index-url", "constraint": "--constraint",
              "trusted-host": "--allow-insecure-host"}
ONE_FLAGS = {"index-url": "--index-url"}
SCOPES = ("global", "install", ":env:")  # pip's order: files' global, then install sections, then PIP_* variables


def pip_config(python: str = sys.executable) -> dict[str, str]:
    """pip's effective settings as {option: value}: the last scope in SCOPES wins."""
    out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True).stdout
    found: dict[tuple[str, str], str] = {}
    for line in out.splitlines():
        key, sep, raw = line.partition("=")
        scope, _, option = key.rpartition(".")
        if sep and scope in SCOPES:
            found[(scope, option)] = ast.literal_eval(raw)
    settings: dict[str, str] = {}
    for scope in SCOPES:
        settings.update({option: value for (s, option), value in found.items() if s == scope})
    return settings


def uv_options(settings: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(uv flags, environment additions) equivalent to pip's `settings`."""
    flags: list[str] = []
    for option, flag in LIST_FLAGS.items():
        for value in settings.get(option, "").split():
            flags += [flag, value]
    for option, flag in ONE_FLAGS.items():
        if settings.get(option):
            flags += [flag, settings[option]]
    if settings.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        flags.append("--no-index")
    env = {}
    if settings.get("cert"):
        env["SSL_CERT_FILE"] = settings["cert"]
    timeout = settings.get("timeout") or settings.get("default-timeout")
    if timeout:
        env["UV_HTTP_TIMEOUT"] = timeout
    return flags, env


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[2] not in ("install", "uninstall"):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    uv, venv, command, args = argv[0], argv[1], argv[2], argv[3:]
    cmd = [uv, "pip", command, "--quiet", "--python", os.path.join(venv, "bin", "python")]
    env = dict(os.environ)
    if command == "install":
        flags, extra = uv_options(pip_config())
        # As pip does: take the best version found on any index (uv's default stops at the first index that has the
        # name), and write the bytecode at install time: with PYTHONDONTWRITEBYTECODE set (as on this machine
        # kind) nothing else ever writes it, and every process would compile torch/transformers/TRL from source
        # (importing TRL took 22 s instead of 13)
        cmd += ["--index-strategy", "unsafe-best-match", "--compile-bytecode", *flags]
        env.update(extra)
    return subprocess.run(cmd + args, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
