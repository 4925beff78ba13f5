"""vLLM plugins of the rollout server, loaded by vLLM through entry points (see pyproject.toml).

- `register` (`vllm.general_plugins`, runs in every vLLM process): registers the `gloo` weight-transfer backend
  in vLLM's `WeightTransferEngineFactory` (workers) and `WeightTransferTrainerFactory` (learner), lazily.
- `WeightSyncRoutes` (`vllm.endpoint_plugins`): vLLM 0.32 mounts its weight-transfer routes only with
  vLLM's dev mode, which also mounts an RPC route that runs any worker method for any caller, `/sleep`,
  `/reset_prefix_cache`, ... This plugin mounts vLLM's own RL router alone, behind a bearer token when
  `CPT_WEIGHT_SYNC_TOKEN` is set, so no dev mode is needed. Endpoint plugins load only when named in
  `VLLM_PLUGINS` (vLLM's rule): `VLLM_PLUGINS=cpt_gloo,cpt_weight_sync` (cpt_core.rollout.PLUGINS). With
  `CPT_ROLLOUT_STOPPABLE=1` and a token it also mounts the stop route (stop_router) behind the same token.
"""

import os

from cpt_core import rollout

GLOO_MODULE = "cpt_trainer.rollout.gloo_transfer"
TOKEN_ENV = rollout.KEY_ENV[1]  # CPT_WEIGHT_SYNC_TOKEN (cpt_core.rollout)


def register() -> None:
    """Idempotent: vLLM may call general plugins more than once per process."""
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory, WeightTransferTrainerFactory

    if "gloo" not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine("gloo", GLOO_MODULE, "GlooWeightTransferEngine")
    if "gloo" not in WeightTransferTrainerFactory._registry:
        WeightTransferTrainerFactory.register_engine("gloo", GLOO_MODULE, "GlooTrainerWeightTransferEngine")


SHUTDOWN_GRACE = 60.0  # seconds a stopping server gets for its clean shutdown before it exits anyway


def stop_router(exit_after: float = 0.5):
    """STOP_ROUTE (cpt_core.rollout): the server answers, then ends itself with SIGTERM, vLLM's own clean shutdown
    (its engine processes end with it; exit status 0 completes the servers' Job in a stage's AppWrapper, whose
    servers must end with its learner: cpt_trainer.rollout.stop). An `os._exit(0)` right away would leave the engine
    processes behind outside a container (tests/vllm_server/test_stop_route.py saw them); it is only the backstop
    for a shutdown that hangs past SHUTDOWN_GRACE."""
    import signal
    import threading

    from fastapi import APIRouter

    router = APIRouter()

    @router.post(rollout.STOP_ROUTE)
    def stop() -> dict:
        threading.Timer(exit_after, os.kill, args=(os.getpid(), signal.SIGTERM)).start()
        backstop = threading.Timer(exit_after + SHUTDOWN_GRACE, os._exit, args=(0,))
        backstop.daemon = True  # a clean shutdown does not wait for it
        backstop.start()
        return {"stopping": True}

    return router


class WeightSyncRoutes:
    """An `EndpointPlugin`: vLLM's RL routes (/init_weight_transfer_engine, /update_weights, /pause, ...)."""

    name = "cpt_weight_sync"
    required_tasks = ("generate",)

    def attach_router(self, app) -> None:
        import secrets

        from fastapi import Depends, HTTPException, Request
        from vllm.entrypoints.rl.online.api_router import router

        token = os.environ.get(TOKEN_ENV, "")

        def check_token(request: Request) -> None:  # (no `from __future__ import annotations`: FastAPI reads it)
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if token and not secrets.compare_digest(given.encode(), token.encode()):
                raise HTTPException(status_code=401, detail="weight-sync routes need the run's bearer token")

        app.include_router(router, dependencies=[Depends(check_token)])
        if token and os.environ.get(rollout.STOPPABLE_ENV) == "1":
            app.include_router(stop_router(), dependencies=[Depends(check_token)])

    async def init_state(self, engine_client, state, args) -> None:
        return None
