"""Which policy each rollout replica serves, and waiting for replicas that restarted (issue 29 item 3).

Every push labels the weights with vLLM's own weight version (`/finish_weight_update {"weight_version"}`, read
back by `/weight_info`): `<learner nonce>/<learner step>`. A replica that restarted (its pod rescheduled, its
process killed) answers vLLM's initial label `default`, one that was replaced by a new pod has a new address or
the same, and either way it no longer holds the learner's label. The learner reads every replica's label before
each generation and after it (weight_sync.WeightSync.ensure_current, rollout.vllm.VllmEngine.generate), so a
completion is only used when its replica held the current label both before and after the request.

Stdlib HTTP only (no vllm/torch import), so the unit tests and the vllm engine can use it anywhere.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

# How long the learner waits for a replica that died to come back (a Deployment's replacement pod loads the model
# and starts vLLM: ~1 min on the tiny model on 2 cores, a few minutes for a 7B model on a GPU node).
RECOVER_TIMEOUT_ENV = "CPT_ROLLOUT_RECOVER_TIMEOUT"
DEFAULT_RECOVER_TIMEOUT = 900.0
PROBE_TIMEOUT = 10.0  # one /weight_info call: a replica that does not answer in this long counts as down


class StalePolicyError(RuntimeError):
    """Rollouts would come from a policy other than the learner's current one; the stage fails rather than
    training on them."""


def recover_timeout() -> float:
    return float(os.environ.get(RECOVER_TIMEOUT_ENV) or DEFAULT_RECOVER_TIMEOUT)


def learner_nonce() -> str:
    """One learner's part of every label: a new learner's labels never equal a replica's stale one. Every rank of
    one torchrun job derives the same nonce (rank 0 pushes, the others only check labels)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        parts = [os.environ.get(k, "") for k in ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")]
        return uuid.uuid5(uuid.NAMESPACE_OID, "/".join(parts)).hex[:12]
    return uuid.uuid4().hex[:12]


def label(nonce: str, step: int) -> str:
    return f"{nonce}/{step}"


def label_step(value: Optional[str]) -> Optional[int]:
    """The learner step a label names; None for vLLM's `default` (a fresh server) or no answer."""
    if not value or "/" not in value:
        return None
    try:
        return int(value.rsplit("/", 1)[1])
    except ValueError:
        return None


def call(endpoint: str, method: str, path: str, body: Optional[dict] = None, token: Optional[str] = None,
         timeout: float = PROBE_TIMEOUT) -> dict:
    """One JSON round trip; raises OSError (URLError, reset, timeout, a reply cut short) or
    urllib.error.HTTPError. A replica killed while it answers leaves http.client's IncompleteRead (not an
    OSError): it is the same fault as a reset connection, so it is raised as one, and every caller that
    treats a dead replica as down (served, the weight-sync fan-out) does so for it too."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(endpoint + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
    except http.client.HTTPException as exc:
        raise ConnectionError(f"{endpoint}{path}: the reply was cut short ({exc!r})") from exc
    return json.loads(raw) if raw else {}


def served(endpoints: list[str], token: Optional[str] = None) -> dict[str, Optional[str]]:
    """Each replica's weight label (None: it did not answer: down, restarting, or not ready yet)."""

    def one(endpoint: str) -> Optional[str]:
        try:
            return str(call(endpoint, "GET", "/weight_info", token=token).get("weight_version"))
        except (OSError, ValueError):
            return None

    with ThreadPoolExecutor(max_workers=max(1, len(endpoints))) as pool:
        return dict(zip(endpoints, pool.map(one, endpoints)))


def wait_ready(resolve: Callable[[], list[str]], count: int, deadline: float,
               token: Optional[str] = None) -> list[str]:
    """The replicas' endpoints once `count` of them answer (a Service's DNS may list a replaced pod's new address
    only after it is ready); raises StalePolicyError at `deadline`."""
    last = ""
    while True:
        try:
            endpoints = resolve()
        except OSError as exc:  # DNS of a headless Service with no ready pod
            endpoints, last = [], f"resolving the replicas failed: {exc}"
        if len(endpoints) >= count:
            answers = served(endpoints, token)
            down = [e for e, v in answers.items() if v is None]
            if not down:
                return endpoints
            last = f"not answering: {', '.join(down)}"
        elif endpoints or not last:
            last = f"{len(endpoints)} of {count} replicas listed"
        if time.monotonic() >= deadline:
            raise StalePolicyError(f"rollout replicas did not come back in time ({last}); set "
                                   f"{RECOVER_TIMEOUT_ENV} to wait longer")
        time.sleep(1.0)
