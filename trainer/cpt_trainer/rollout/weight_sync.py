"""Learner -> rollout servers weight sync through vLLM's native weight-transfer API (vLLM >= 0.32).

The learner builds vLLM's own trainer engine (`WeightTransferTrainerFactory.trainer_init`) over a
`ModuleSource` of its model: `nccl` on GPU (vLLM's engine, as TRL's vllm-serve uses), `gloo` on CPU
(cpt_trainer.rollout.gloo_transfer, registered by our vLLM plugin). Both drive the same HTTP round trip:
/init_weight_transfer_engine once, then per sync /start_weight_update, /update_weights (concurrently with the
broadcast) and /finish_weight_update.

Several replicas: the learner is rank 0 of ONE group holding every replica's workers (replica r's workers start
at rank 1 + r * world_size), so one broadcast reaches all replicas; `FanOutClient` gives each replica its own
`rank_offset` and calls them concurrently. The servers' prefix caches are cleared around each sync
(/pause ... /resume), so no cached KV computed with the old weights is reused.

Fleet recovery (docs/checkpoints.md): every push labels the weights `<nonce>/<step>` (rollout.fleet). A push that
fails because a replica died, or a replica found with another label before a generation (`ensure_current`), makes
rank 0 wait for every replica to answer again, re-initialise the transfer group (its world includes every
replica's workers, so all re-join) and push the current weights in full; only then is the replica used.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from cpt_core import rollout as contract
from cpt_trainer.rollout import fleet

log = logging.getLogger(__name__)


class WeightSyncError(RuntimeError):
    pass


def learner_address(first_endpoint: str) -> str:
    """The address the servers reach the learner at: CPT_LEARNER_ADDRESS / POD_IP, else the local interface
    that routes to the first server (127.0.0.1 for local servers)."""
    addr = os.environ.get("CPT_LEARNER_ADDRESS") or os.environ.get("POD_IP")
    if addr:
        return addr
    host = urllib.request.urlparse(first_endpoint).hostname or "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))  # UDP connect sends nothing; it only picks the route
        return s.getsockname()[0]


def free_port(host: str) -> int:
    """CPT_WEIGHT_SYNC_PORT on a cluster (a fixed port a NetworkPolicy can name), else any free port."""
    if os.environ.get("CPT_WEIGHT_SYNC_PORT"):
        return int(os.environ["CPT_WEIGHT_SYNC_PORT"])
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class FanOutClient:
    """vLLM's `VLLMWeightSyncClient` protocol over HTTP to every replica at once (stdlib HTTP)."""

    def __init__(self, endpoints: list[str], timeout: float = 600.0, token: Optional[str] = None):
        self.endpoints = [e.rstrip("/").removesuffix("/v1") for e in endpoints]
        self.timeout, self.token = timeout, token or os.environ.get("CPT_WEIGHT_SYNC_TOKEN")
        self.world_sizes = [self._call(e, "GET", "/get_world_size")["world_size"] for e in self.endpoints]
        self.version: Optional[str] = None  # the label finish_weight_update gives the pushed weights (fleet)
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(self.endpoints)))

    @property
    def workers(self) -> int:
        return sum(self.world_sizes)

    def _call(self, endpoint: str, method: str, path: str, body: Optional[dict] = None) -> dict:
        try:
            return fleet.call(endpoint, method, path, body, self.token, self.timeout)
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            raise WeightSyncError(f"rollout server {endpoint}{path}: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise WeightSyncError(f"rollout server {endpoint}{path} failed: {exc}") from exc

    def _all(self, path: str, bodies: list[Optional[dict]], method: str = "POST") -> None:
        futures = [self.pool.submit(self._call, e, method, path, b) for e, b in zip(self.endpoints, bodies)]
        for f in futures:
            f.result()

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        offsets, rank = [], 1
        for ws in self.world_sizes:
            offsets.append(rank)
            rank += ws
        self._all("/init_weight_transfer_engine",
                  [{"init_info": dict(init_info, rank_offset=o)} for o in offsets])

    def start_weight_update(self) -> None:
        self._all("/pause?mode=wait&clear_cache=true", [None] * len(self.endpoints))
        self._all("/start_weight_update", [None] * len(self.endpoints))

    def update_weights(self, update_info) -> None:
        self._all("/update_weights", [{"update_info": update_info}] * len(self.endpoints))

    def shutdown_weight_transfer_engine(self) -> None:
        self._all("/shutdown_weight_transfer_engine", [None] * len(self.endpoints))

    def finish_weight_update(self, weight_version: Optional[str] = None) -> None:
        weight_version = weight_version or self.version  # vLLM's trainer engines call it with no version
        body = None if weight_version is None else {"weight_version": weight_version}
        self._all("/finish_weight_update", [body] * len(self.endpoints))
        self._all("/resume", [None] * len(self.endpoints))


def learner_source(model):
    """vLLM's `ModuleSource` over the learner's parameters, also under DeepSpeed ZeRO-3: a partitioned parameter
    (it has `ds_id`) declares its full `ds_shape` and is gathered on every rank while it is sent (a collective,
    hence every learner rank iterates the source in the same order, as vLLM's trainer engines do)."""
    from vllm.distributed.weight_transfer.base import ModuleSource, ParamMeta

    class LearnerSource(ModuleSource):
        def metadata(self):
            return [ParamMeta(n, p.dtype, tuple(getattr(p, "ds_shape", p.shape)))
                    for n, p in self._module.named_parameters()]

        def __iter__(self):
            for name, param in self._module.named_parameters():
                if not hasattr(param, "ds_id"):
                    yield name, param.detach()
                    continue
                import deepspeed

                with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                    full = param.data.detach().clone()  # re-partitioned when the context exits
                yield name, full

    return LearnerSource(model)


def default_backend() -> str:
    """What the executor chose (CPT_WEIGHT_SYNC_BACKEND: the operator from the spec, `cpt run` for its machine,
    the servers started with the same), else the same rule on this machine: never a second rule of its own."""
    return contract.local_weight_sync_backend()


class WeightSync:
    """Pushes a model's parameters to every replica. Built lazily on the first push (the rendezvous needs the
    model); every learner rank calls `push` (non-senders only join the gather), rank 0 sends and recovers the
    fleet. `resolve` lists the replicas again after a fault (a replaced pod may have a new address)."""

    def __init__(self, endpoints: list[str], backend: Optional[str] = None, timeout: float = 600.0,
                 resolve: Optional[Callable[[], list[str]]] = None):
        self.endpoints, self.backend, self.timeout = list(endpoints), backend or default_backend(), timeout
        self.resolve = resolve or (lambda: list(endpoints))
        self.replicas = len(self.endpoints)
        self.engine = None
        self.seconds: list[float] = []
        self.is_sender = int(os.environ.get("RANK", "0")) == 0
        self.token = os.environ.get("CPT_WEIGHT_SYNC_TOKEN")
        self.nonce = fleet.learner_nonce()
        self.step: Optional[int] = None  # the learner step of the weights last pushed
        self.recoveries: list[dict] = []  # per fleet recovery: why, which replicas, seconds
        self.report: Optional[Callable[[dict[str, Optional[str]]], None]] = None  # gets every reading of labels
        self._model = None

    @property
    def version(self) -> Optional[str]:
        """The label every replica must hold (None before the first push)."""
        return None if self.step is None else fleet.label(self.nonce, self.step)

    def _init(self, model) -> None:
        from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

        from cpt_trainer.rollout import vllm_plugin

        vllm_plugin.register()
        rank = int(os.environ.get("RANK", "0"))
        client = FanOutClient(self.endpoints, self.timeout) if rank == 0 else None
        host = learner_address(self.endpoints[0])
        world = 1 + (client.workers if client else 0)
        if self.backend == "gloo":
            from cpt_trainer.rollout.gloo_transfer import GlooTrainerInitInfo

            info = GlooTrainerInitInfo(host, free_port(host), world, rank=rank)
        elif self.backend == "nccl":
            from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

            info = NCCLTrainerInitInfo(host, free_port(host), world, rank=rank)
        else:
            raise WeightSyncError(f"unknown weight-sync backend {self.backend!r} (gloo or nccl)")
        self.engine = WeightTransferTrainerFactory.trainer_init(info, client=client, source=learner_source(model))

    def _send(self, model) -> None:
        if self.engine is None or self.engine.source._module is not model:
            self.close()
        try:
            if self.engine is None:
                self._init(model)  # the rendezvous with the servers' workers can meet a dead one too
            client = getattr(self.engine, "client", None)
            if client is not None:
                client.version = self.version
            self.engine.send_weights()
        except WeightSyncError:
            raise
        except RuntimeError as exc:
            # The transport's own error (gloo: "Connection reset by peer", NCCL: a timeout) names a socket, not
            # the server: a replica died or hung mid-broadcast. Say which servers this push was for.
            raise WeightSyncError(f"weight sync to rollout server(s) {', '.join(self.endpoints)} failed: "
                                  f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc

    def push(self, model, step: Optional[int] = None) -> None:
        """Push `model` as the policy of learner step `step` (default: one past the last push). A push that a dead
        replica breaks waits for the fleet to come back and pushes again (rank 0)."""
        t0 = time.perf_counter()
        self.step = step if step is not None else (0 if self.step is None else self.step + 1)
        self._model = model
        try:
            self._send(model)
        except WeightSyncError as exc:
            if not self.recoverable:
                raise
            try:
                self.recover(f"push of step {self.step} failed: {exc}")
            except (WeightSyncError, fleet.StalePolicyError) as again:  # the stage fails; say both
                raise WeightSyncError(f"{exc}; not recovered: {again}") from (exc.__cause__ or exc)
        self.seconds.append(time.perf_counter() - t0)
        if self.is_sender and self.report is not None:
            self.served()  # what each replica holds after this sync, for the stage's metrics

    def _report(self, answers: dict[str, Optional[str]]) -> dict[str, Optional[str]]:
        if self.report is not None and self.is_sender:  # one line per reading, from the rank that pushes
            self.report(answers)
        return answers

    @property
    def recoverable(self) -> bool:
        """Only a single learner rank can repeat a push alone: with several, a ZeRO-3 push is a collective of
        every rank (the parameter gather), which the other ranks would not join a second time."""
        return self.is_sender and int(os.environ.get("WORLD_SIZE", "1")) == 1

    def served(self) -> dict[str, Optional[str]]:
        """Each replica's label now (None: no answer), also handed to `report` (the stage's metrics)."""
        return self._report(fleet.served(self.endpoints, self.token))

    def ensure_current(self) -> Optional[str]:
        """Before a generation: every replica holds this learner's current label, or is brought to it (rank 0:
        recover; other ranks wait for rank 0 to do it). Returns the label; raises StalePolicyError when that
        cannot be had."""
        if self.version is None:
            return None
        stale = {e: v for e, v in self.served().items() if v != self.version}
        if not stale:
            return self.version
        why = "; ".join(f"{e} serves {v or 'nothing (down)'}" for e, v in stale.items())
        if self.recoverable:
            self.recover(f"before generating with step {self.step}: {why}")
        else:
            deadline = time.monotonic() + fleet.recover_timeout()
            while any(v != self.version for v in self.served().values()):
                if time.monotonic() >= deadline:
                    raise fleet.StalePolicyError(f"rollout replicas do not serve step {self.step} ({why}) and "
                                                 "this rank cannot re-sync them; not generating with them")
                time.sleep(1.0)
        stale = {e: v for e, v in self.served().items() if v != self.version}
        if stale:
            raise fleet.StalePolicyError(f"after re-sync, rollout replicas still do not serve step {self.step}: "
                                         f"{stale}; not training on their rollouts")
        return self.version

    def recover(self, reason: str) -> None:
        """Wait for every replica to answer, rebuild the transfer group with all of them and push the current
        weights in full, retrying until fleet.recover_timeout() runs out."""
        if self._model is None:
            raise WeightSyncError(f"cannot re-sync rollout replicas before the first push ({reason})")
        t0 = time.monotonic()
        deadline = t0 + fleet.recover_timeout()
        log.warning("rollout fleet: %s; waiting for every replica, then re-syncing step %s", reason, self.step)
        print(f"cpt-trainer: rollout fleet: {reason}; re-syncing step {self.step}", file=sys.stderr, flush=True)
        while True:
            self.close()
            self.endpoints = fleet.wait_ready(self.resolve, self.replicas, deadline, self.token)
            try:
                self._send(self._model)
                break
            except WeightSyncError as exc:
                if time.monotonic() >= deadline:
                    raise WeightSyncError(f"rollout fleet not re-synced in {fleet.recover_timeout():.0f} s: "
                                          f"{exc}") from exc
                log.warning("rollout fleet: re-sync failed (%s); trying again", exc)
                time.sleep(1.0)
        seconds = round(time.monotonic() - t0, 3)
        self.recoveries.append({"step": self.step, "reason": reason[:300], "seconds": seconds})
        print(f"cpt-trainer: rollout fleet re-synced at step {self.step} in {seconds} s", file=sys.stderr,
              flush=True)

    def close(self) -> None:
        """Leave the group on both sides (best effort: a dead server has nothing to release)."""
        if self.engine is None:
            return
        try:
            if getattr(self.engine, "client", None) is not None:
                self.engine.client.shutdown_weight_transfer_engine()
        except WeightSyncError as exc:
            log.warning("weight-sync shutdown: %s", exc)
        finally:
            self.engine.shutdown()
            self.engine = None
