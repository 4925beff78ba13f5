"""Stopping a stage's rollout servers when its learner is done (a stage's AppWrapper under a queue,
cpt_operator.kube.wrapped).

An AppWrapper gives its quota back only once every pod of it has exited 0; vLLM servers never exit on their own.
So servers started with cpt_core.rollout.STOPPABLE_ENV mount STOP_ROUTE (vllm_plugin.stop_router, behind the
run's weight-sync token) and exit 0 right after answering it, and a learner started with STOP_AT_END_ENV calls
it, from rank 0, on every server of its stage once the stage succeeded. A server that does not answer is asked
again until the stage's headless Service lists none (its pods leave the Service once they stop being ready) or
the time is up: the stage's outcome is already decided then, so a server left running is a warning, not a
failed stage (it holds its GPUs until the run is suspended or deleted).

Stdlib HTTP only (no vllm/torch import).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.error
import urllib.request
from typing import Callable, Mapping, Optional

from cpt_core import rollout

log = logging.getLogger(__name__)
STOP_TIMEOUT = 300.0
REQUEST_TIMEOUT = 10.0


def wanted(env: Mapping[str, str], rollout_url: Optional[str]) -> bool:
    """Whether this process stops its stage's servers at the end: asked for, servers there, and rank 0."""
    return env.get(rollout.STOP_AT_END_ENV) == "1" and bool(rollout_url) and env.get("RANK", "0") == "0"


def _post(endpoint: str, token: str) -> bool:
    """True when the server took the request (or is already gone: nothing listens any more)."""
    request = urllib.request.Request(endpoint + rollout.STOP_ROUTE, data=b"{}", method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as reply:
            return 200 <= reply.status < 300
    except urllib.error.HTTPError as exc:
        log.warning("rollout server %s refused to stop: HTTP %s", endpoint, exc.code)
        return False
    except (ConnectionError, urllib.error.URLError, socket.timeout, OSError):
        return True  # refused or reset: it no longer serves


def stop_servers(resolve: Callable[[], list[str]], token: str, timeout: float = STOP_TIMEOUT,
                 post: Callable[[str, str], bool] = _post, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> list[str]:
    """Ask every server `resolve()` lists to stop until it lists none; returns the ones still listed at the end
    (empty: all stopped). A name that no longer resolves lists none."""
    deadline = clock() + timeout
    left: list[str] = []
    while True:
        try:
            left = resolve()
        except OSError:  # NXDOMAIN: the headless Service has no ready pod left
            left = []
        if not left or clock() >= deadline:
            return left
        for endpoint in left:
            post(endpoint, token)
        sleep(2.0)


def stop_at_end(rollout_url: Optional[str], env: Mapping[str, str] = os.environ) -> None:
    """What a learner does after its stage succeeded (cpt_trainer.cli): stop the stage's servers if asked."""
    if not wanted(env, rollout_url):
        return
    from cpt_trainer.rollout import rollout_endpoints

    token = env.get(rollout.KEY_ENV[1], "")
    left = stop_servers(lambda: rollout_endpoints(rollout_url or ""), token)
    if left:
        print(f"cpt-trainer: warning: rollout servers still running after {STOP_TIMEOUT:.0f} s: {', '.join(left)}",
              flush=True)
