"""The kopf adapter: the only module that imports kopf. kopf logs in, watches the ContinualPostTraining resources
and runs the asyncio loop; everything else is the controller's (kube/controller/), which this module starts at
kopf's startup, feeds with the resource watch's events and stops at kopf's cleanup. Only kopf's public API.

One event handler and nothing else: no daemon, no change handler, so kopf keeps no per-resource progress, writes
nothing on the resources and adds no finalizer (it removes the one older versions of this operator added);
children go with their run through ownerReferences. The children are not kopf's: the controller's informer
watches them itself (rest/watch.py), without kopf's per-event handler machinery. kopf's posting of log lines as
Events is off, and its per-handler "succeeded" lines are filtered out: the operator logs one line per decision.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import kopf

from cpt_core import api
from cpt_operator.kube import jobs
from cpt_operator.kube.controller.controller import Controller, retry_backoffs
from cpt_operator.kube.settings import Settings, job_backend

PREFIX = api.GROUP
# Not added any more (no daemon, no deletion handler); named so that kopf removes it from resources that an
# older version of this operator left it on.
FINALIZER = f"{PREFIX}/kopf-finalizer"


class QuietKopf(logging.Filter):
    """Drop kopf's "Handler ... succeeded." lines: one per watch event of the event handler, most of the log at
    scale."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and record.getMessage().endswith(" succeeded."))


class NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """No essence, no diff: kopf builds both (two deep copies of the object) on every watch event, only for
    change handlers, and this operator has none. About a tenth of its CPU at 1,000 new runs."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> Any:
        return None


logging.getLogger("kopf.objects").addFilter(QuietKopf())


@kopf.on.login()
def login(**kwargs: Any) -> Optional[kopf.ConnectionInfo]:
    """In a pod: the service account. Elsewhere: KUBECONFIG (read now, not when the client library was imported)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        return kopf.login_with_service_account(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """kopf's settings for its one watch, then the controller, started in kopf's loop."""
    cfg = Settings.from_env()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase(prefix=PREFIX, key="last-handled-configuration")
    settings.persistence.finalizer = FINALIZER
    settings.posting.enabled = False
    # One watch request per CPT_WATCH_TIMEOUT while idle; a stream that went silent (no event and no bookmark,
    # which API servers send about every minute) is re-opened after kopf's inactivity timeout.
    settings.watching.server_timeout = cfg.watch_timeout
    settings.watching.client_timeout = cfg.watch_timeout + 30
    settings.watching.connect_timeout = 10
    settings.networking.error_backoffs = retry_backoffs(cfg)
    settings.execution.default_backoff = cfg.error_backoff
    settings.queueing.idle_timeout = min(5.0, cfg.reconcile_interval)
    controller = Controller.connect(cfg, jobs.BACKENDS[job_backend()])
    controller.start()
    memo.cpt = controller


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    controller: Optional[Controller] = getattr(memo, "cpt", None)
    if controller is not None:
        await controller.stop()


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def resource_event(event: dict, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Hand the resource's event to the controller's wake rules. async (in the loop that owns the controller's
    queue and state): a sync handler would cost a hop to kopf's executor for every event of every run."""
    controller: Optional[Controller] = getattr(memo, "cpt", None)
    if controller is not None:
        controller.wakes.resource(event.get("type"), namespace, name, event["object"])


def run_operator(cfg: Settings, liveness_endpoint: Optional[str] = None) -> None:
    """Run kopf with this module's handlers (what `python -m cpt_operator` calls)."""
    kopf.run(
        clusterwide=not cfg.namespaces,
        namespaces=list(cfg.namespaces),
        standalone=True,  # one replica: the controller's queue and streams do not pause with kopf's peering
        liveness_endpoint=liveness_endpoint,
    )
