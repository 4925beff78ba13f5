"""The REST client: the operator's only requests to the API server outside the watch streams (rest/watch.py).

Synchronous (the kubernetes client), called from pass threads by the controller. Every call is idempotent:
"already exists" on create and "not found" on delete are success, status is written as a merge patch only when
it changed, so a pass can be repeated or cut short at any point. Every verb used here is listed in
`permissions.REQUIRED_RULES` (the chart's RBAC is tested against it). It knows paths, JSON and the ownership
mark of what it creates; nothing of the planner, the controller, storage or admission. A kind is named by its
`Ref` (apiVersion, plural): which kinds a run's children are is the controller's business (observe.KINDS).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from typing import Any, Optional

import kubernetes

from cpt_operator import __version__
from cpt_core import api
from cpt_operator.kube import ownership
from cpt_operator.kube.rest.paths import Ref, collection_path, object_path

log = logging.getLogger(__name__)
USER_AGENT = f"cpt-operator/{__version__}"
TIMEOUT = (5, 30)  # connect, read (seconds)


def configuration(kubeconfig: Optional[str] = None) -> kubernetes.client.Configuration:
    """The operator's credentials: in a pod its service account, else KUBECONFIG (read now, not at import)."""
    config = kubernetes.client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config(client_configuration=config)
    else:
        kubernetes.config.load_kube_config(config_file=kubeconfig or os.environ.get("KUBECONFIG"),
                                           client_configuration=config)
    return config


class ApiError(Exception):
    """An API call failed: status code, the server's reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class ForeignObject(ApiError):
    """A child's name is taken by an object that does not carry this run's mark (kube.ownership; an
    ownerReference with the run's uid is no proof, anyone can write one): never adopted (it could be a planted
    ConfigMap or Service), reported on the resource, and the pass stops before anything that would use it."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(409, "ForeignObject", f"{kind}/{name} already exists and is not owned by this run; "
                                               "it is not adopted: delete or rename it")
        self.kind, self.name = kind, name


class Kube:
    """A thin REST layer over kubernetes.client.ApiClient: JSON in, JSON out, ApiError on failure."""

    def __init__(self, client: kubernetes.client.ApiClient, mark_key: Optional[bytes] = None) -> None:
        self.client = client
        # Marks the children this operator creates and proves the ones it finds (kube.ownership).
        self.mark_key = mark_key if mark_key is not None else ownership.default_key()
        self.client.user_agent = USER_AGENT

    @classmethod
    def connect(cls, kubeconfig: Optional[str] = None) -> "Kube":
        """In-cluster service account if there is one, else KUBECONFIG / ~/.kube/config."""
        return cls(kubernetes.client.ApiClient(configuration=configuration(kubeconfig)))

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, path: str, body: Any = None, query: Optional[dict] = None,
                content_type: str = "application/json") -> Any:
        try:
            data = self.client.call_api(
                path, method, query_params=list((query or {}).items()), body=body,
                header_params={"Accept": "application/json", "Content-Type": content_type},
                response_types_map=None, auth_settings=["BearerToken"], _return_http_data_only=True,
                _preload_content=False, _request_timeout=TIMEOUT)
        except kubernetes.client.ApiException as exc:
            try:
                status = json.loads(exc.body or "{}")
            except ValueError:
                status = {}
            raise ApiError(exc.status or 0, status.get("reason") or str(exc.reason), status.get("message") or "") \
                from None
        raw = data.data
        return json.loads(raw) if raw else None

    # ---------------------------------------------------------------- reads
    def get_resource(self, namespace: str, name: str) -> Optional[dict]:
        try:
            return self.request("GET", object_path(api.API_VERSION, api.PLURAL, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list_warning_events(self, namespace: str) -> list[dict]:
        """The namespace's Warning events (controller.admission looks for pods the cluster refused to create)."""
        listing = self.request("GET", collection_path("v1", "events", namespace),
                               query={"fieldSelector": "type=Warning"})
        return listing.get("items") or []

    def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's data, decoded. Values are credentials: never log or return them in errors."""
        secret = self.request("GET", object_path("v1", "secrets", namespace, name))
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    # ---------------------------------------------------------------- writes
    def create(self, ref: Ref, namespace: str, obj: dict) -> Optional[dict]:
        """Create a child, marked as this run's: the server's copy, or None if this run's own object already
        existed (names are deterministic, so a lagging cache only costs this 409). An object of that name that
        does not carry this run's mark raises ForeignObject, whoever it claims to be owned by."""
        uid = obj["metadata"]["ownerReferences"][0]["uid"]
        body = ownership.sign(self.mark_key, obj, uid)
        try:
            reply = self.request("POST", collection_path(*ref, namespace), body=body)
            return reply if isinstance(reply, dict) and reply else body
        except ApiError as exc:
            if not (exc.status == 409 and exc.reason == "AlreadyExists"):
                raise
        name = obj["metadata"]["name"]
        try:
            existing = self.request("GET", object_path(*ref, namespace, name))
        except ApiError as exc:
            if exc.status == 404:  # deleted in between (garbage collection): the next pass creates it
                return None
            raise
        existing = dict(existing, kind=obj["kind"])
        if not uid or not ownership.owned_by(existing, uid) or not ownership.proven(self.mark_key, existing, uid):
            raise ForeignObject(obj["kind"], name)
        return None

    def patch(self, ref: Ref, namespace: str, name: str, body: dict) -> Optional[dict]:
        return self.request("PATCH", object_path(*ref, namespace, name), body=body,
                            content_type="application/merge-patch+json")

    def delete(self, ref: Ref, namespace: str, name: str) -> bool:
        """Delete a child and, in the background, what it owns; False if it was already gone."""
        try:
            self.request("DELETE", object_path(*ref, namespace, name),
                         body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

    def patch_status(self, namespace: str, name: str, patch: dict) -> Optional[dict]:
        """A merge patch of the resource's status: the resource as the server left it (None: an empty reply)."""
        reply = self.request("PATCH", object_path(api.API_VERSION, api.PLURAL, namespace, name, "status"),
                             body={"status": patch}, content_type="application/merge-patch+json")
        return reply if isinstance(reply, dict) and reply else None

    def post_event(self, namespace: str, body: dict) -> None:
        self.request("POST", collection_path("v1", "events", namespace), body=body)
