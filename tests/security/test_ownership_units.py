"""Issue 26 item 2, the pieces: the mark a planter cannot compute (kube/ownership.py), private child names, the
storage owner marker's refusal (names nobody), adopting a deleted run's prefix, the prefix for runs without
secretRef, and a model inside another run's checkpoints. Real stores (local directories), no cluster."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from cpt_core.storage import open_store
from cpt_core.storage.owner import ADOPT_ANNOTATION, OWNER, check, claim, model_conflict
from cpt_operator.kube import manifests, ownership
from cpt_operator.kube.observe import slim_child
from cpt_operator.kube.settings import Settings, SettingsError
from cpt_operator.planner.names import private_name

KEY = b"k" * 40
UID = "uid-run"


def _cm(data: dict, uid: str = UID) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "data": data, "metadata": {
        "name": "demo-0-evaluate-x", "namespace": "ns", "labels": {manifests.LABEL_RUN: "demo"},
        "ownerReferences": [{"uid": uid}]}}


def test_only_the_operators_mark_proves_a_child():
    forged = _cm({"stage.yaml": "a"})
    assert not ownership.proven(KEY, forged, UID)  # the run's uid in ownerReferences is no proof
    signed = ownership.sign(KEY, forged, UID)
    assert ownership.proven(KEY, signed, UID)
    assert not ownership.proven(b"x" * 40, signed, UID)  # another key
    assert not ownership.proven(KEY, signed, "another-run")  # a same-named earlier run
    copied = dict(signed, data={"stage.yaml": "attacker"})  # the mark copied onto other content
    assert not ownership.proven(KEY, copied, UID)
    relabelled = json.loads(json.dumps(signed))
    relabelled["metadata"]["labels"][manifests.LABEL_RUN] = "other"
    assert not ownership.proven(KEY, relabelled, UID)


def test_slim_copies_keep_what_the_mark_covers():
    signed = ownership.sign(KEY, _cm({"stage.yaml": "a" * 10_000}), UID)
    slim = slim_child(signed)
    assert "data" not in slim and ownership.proven(KEY, slim, UID)
    assert ownership.proven(KEY, slim_child(slim), UID)  # slimming a slim copy keeps the digest
    assert not ownership.proven(KEY, slim_child(dict(signed, data={"stage.yaml": "b"})), UID)


def test_the_servers_copy_of_a_secret_and_a_network_policy_still_proves():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ns"},
              "stringData": {"token": "abc"}}
    signed = ownership.sign(KEY, secret, UID)
    stored = {k: v for k, v in signed.items() if k != "stringData"}
    stored["data"] = {"token": "YWJj"}  # what the API server keeps: stringData folded into base64 data
    assert ownership.proven(KEY, stored, UID)
    assert not ownership.proven(KEY, dict(stored, data={"token": "ZXZpbA=="}), UID)
    policy = {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "ns"},
              "spec": {"podSelector": {"matchLabels": {"a": "b"}}, "egress": [{"ports": [{"port": 53}]}]}}
    signed = ownership.sign(KEY, policy, UID)
    defaulted = json.loads(json.dumps(signed))
    defaulted["spec"]["egress"][0]["ports"][0]["protocol"] = "TCP"  # the server's default
    assert ownership.proven(KEY, defaulted, UID)
    opened = json.loads(json.dumps(signed))
    opened["spec"]["podSelector"] = {}
    assert not ownership.proven(KEY, opened, UID)


def test_private_names_are_stable_and_unguessable_without_the_key():
    a = private_name("demo-0-evaluate", KEY, UID)
    assert a == private_name("demo-0-evaluate", KEY, UID) and a.startswith("demo-0-evaluate-")
    assert a != private_name("demo-0-evaluate", b"y" * 40, UID)
    assert a != private_name("demo-0-evaluate", KEY, "uid-other")
    assert len(private_name("a" * 50, KEY, UID)) <= 63


def test_a_short_key_is_refused_at_start(tmp_path):
    with pytest.raises(SettingsError, match="CPT_CHILD_KEY"):
        Settings.from_env({"CPT_CHILD_KEY": "short"})
    path = tmp_path / "key"
    first = Settings.from_env({"CPT_CHILD_KEY_FILE": str(path)}).plan_defaults.child_key
    assert len(first) >= 32 and Settings.from_env({"CPT_CHILD_KEY_FILE": str(path)}).plan_defaults.child_key == first
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_the_refusal_names_no_other_run_and_adoption_needs_a_deleted_run(tmp_path):
    store = open_store(str(tmp_path / "prefix"))
    assert claim(store, "uid-a", "team-a", "secret-project") == (None, True)
    why, new = claim(store, "uid-b", "team-b", "mine")
    assert why and not new and ADOPT_ANNOTATION in why
    for word in ("team-a", "secret-project", "uid-a"):
        assert word not in why
    asked = []
    why, _ = claim(store, "uid-b", "team-b", "mine", may_adopt=lambda marker: asked.append(marker) or False)
    assert why and asked and "uid-a" not in why
    assert claim(store, "uid-c", "team-a", "again", may_adopt=lambda marker: True) == (None, True)
    marker = json.loads(store.get_bytes(OWNER))
    assert (marker["uid"], marker["adopted_from"]) == ("uid-c", "uid-a")
    assert check(store, "uid-c", "team-a", "again") is None
    assert "another run" in check(store, "uid-a", "team-a", "secret-project")


def test_runs_without_secret_ref_keep_to_their_namespaces_prefix():
    s = Settings.from_env({"CPT_STORAGE_PREFIX_WITHOUT_SECRET": "s3://cpt-runs/{namespace}/"})
    spec = lambda uri, **kw: SimpleNamespace(uri=uri, secret_ref=kw.get("secret"), endpoint=kw.get("endpoint"))
    assert s.unsigned_refusal(spec("s3://cpt-runs/team-a/run1"), "team-a") is None
    why = s.unsigned_refusal(spec("s3://cpt-runs/team-b/run1"), "team-a")
    assert why and "s3://cpt-runs/team-a/" in why and "secretRef" in why
    assert s.unsigned_refusal(spec("s3://cpt-runs/team-a-evil/x"), "team-a")  # a prefix, not a string prefix
    assert s.unsigned_refusal(spec("s3://cpt-runs/team-a/../team-b/x"), "team-a")
    assert s.unsigned_refusal(spec("s3://other/x", secret="mine"), "team-a") is None  # own credentials
    assert s.unsigned_refusal(spec("s3://other/x", endpoint="https://tenant.example"), "team-a") is None  # anonymous
    none = Settings.from_env({"CPT_STORAGE_PREFIX_WITHOUT_SECRET": "none"})
    assert "secretRef is required" in none.unsigned_refusal(spec("s3://cpt-runs/team-a/x"), "team-a")
    assert Settings.from_env({}).unsigned_refusal(spec("s3://anywhere/x"), "ns") is None  # "*": one tenant
    for bad in ("cpt-runs/{namespace}", "s3://x/{name}/", "s3://"):
        with pytest.raises(SettingsError, match="CPT_STORAGE_PREFIX_WITHOUT_SECRET"):
            Settings.from_env({"CPT_STORAGE_PREFIX_WITHOUT_SECRET": bad})


def test_a_model_inside_another_runs_checkpoints_is_refused(tmp_path):
    def open_prefix(uri: str):  # s3://bucket/... mapped onto local folders: a real store per prefix
        return open_store(str(tmp_path / uri[len("s3://"):]))

    claim(open_prefix("s3://bucket/team-a/run1"), "uid-a", "team-a", "run1")
    theirs = "s3://bucket/team-a/run1/tasks/001-sort/checkpoint/"
    why = model_conflict(open_prefix, theirs, "uid-b")
    assert why and "another run" in why and "uid-a" not in why
    assert model_conflict(open_prefix, theirs, "uid-a") is None  # its own checkpoint
    assert model_conflict(open_prefix, "s3://bucket/models/tiny/", "uid-b") is None
    assert model_conflict(open_prefix, "s3://bucket/team-b/tasks/x/", "uid-b") is None  # no marker there
