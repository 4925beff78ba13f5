"""permissions.REQUIRED_RULES is exact: every API verb the operator (kube + kopf) used on a full run is declared,
and every declared verb was used. The chart's RBAC is tested against REQUIRED_RULES, so this closes the loop."""

from __future__ import annotations

import base64

import kubernetes
from operator_harness import cpt_body, new_bucket, run_to_end, wait_for
from kubeemu.semantics import parse_path

from cpt_operator.kube.permissions import CONDITIONAL_RULES, REQUIRED_RULES

OPERATOR_AGENTS = ("kopf/", "cpt-operator/", "cpt-operator-watch/")  # the last: the informer's streams


def _verb(method: str, path, params: dict) -> str:
    if method == "GET":
        return "watch" if str(params.get("watch", "")).lower() in ("true", "1") else ("get" if path.name else "list")
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[method]


def used_rules(emulator) -> set[tuple[str, str, str]]:
    def collect(emu):
        out = set()
        for request in emu._requests:
            agent = request.headers.get("User-Agent", "")
            path = parse_path(request.url.path)
            if path is None or not agent.startswith(OPERATOR_AGENTS):
                continue
            resource = path.plural + (f"/{path.subresource}" if path.subresource else "")
            out.add((path.group, resource, _verb(str(request.method.value).upper(), path, request.params)))
        return out
    return emulator.call(collect)


def test_required_rules_are_exactly_what_the_operator_uses(emulator, emu_world, emu_operator):
    world = emu_world
    world.core.create_namespaced_secret("default", {"metadata": {"name": "s3"}, "data": {
        "AWS_ACCESS_KEY_ID": base64.b64encode(b"testing").decode(),
        "AWS_SECRET_ACCESS_KEY": base64.b64encode(b"testing-secret").decode()}})
    body = cpt_body("perm", world.endpoint, new_bucket(world.endpoint), tasks=1, method="grpo")
    body["spec"]["storage"]["secretRef"] = "s3"
    world.create(body)
    wait_for(lambda: world.jobs("perm"), what="first job")
    world.patch_spec("perm", {"suspend": True})  # patches the running PyTorchJob
    wait_for(lambda: any(j["spec"]["runPolicy"].get("suspend") for j in world.jobs("perm")), what="suspended")
    world.patch_spec("perm", {"suspend": False})
    wait_for(lambda: not any(j["spec"]["runPolicy"].get("suspend") for j in world.jobs("perm")), what="resumed")
    world.play_trainer("perm")  # task 0 committed: task 1 runs with rollout servers
    apps = kubernetes.client.AppsV1Api(world.client)
    servers = lambda: apps.read_namespaced_deployment("perm-1-rollout", world.namespace).spec.replicas  # noqa: E731
    wait_for(lambda: servers() == 1, what="rollout servers")
    world.patch_spec("perm", {"suspend": True})  # scales the rollout Deployment to 0 (issue 26: a 403 before)
    wait_for(lambda: servers() == 0, what="rollout servers scaled to 0")
    world.patch_spec("perm", {"suspend": False})
    assert run_to_end(world, "perm", timeout=30)["phase"] == "Succeeded"  # deletes the rollout servers
    world.events_with("perm", "Succeeded", timeout=90)  # events go out behind the passes (kube/controller/event_sender.py)
    world.delete("perm")  # kopf releases its finalizer
    wait_for(lambda: world.get("perm") is None, what="deleted")

    used = used_rules(emulator)
    declared = {(group, resource, verb) for group, resource, verbs in REQUIRED_RULES for verb in verbs}
    assert used - declared == set(), f"used but not in permissions.REQUIRED_RULES: {sorted(used - declared)}"
    assert declared - used - CONDITIONAL_RULES == set(), f"declared but never used: {sorted(declared - used)}"
