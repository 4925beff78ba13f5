"""A pass that raises is never a silent loop: a condition and one event on the resource, exponential backoff.

Also the inputs a cluster accepts that used to make every pass raise: regexes re.compile cannot handle, the
annotation "²", malformed values inside a manifest (tests/storage/test_manifest_model.py for the parsing)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml

from cpt_core.validation import SpecError, validate_resource
from cpt_operator.kube.controller.workqueue import error_delay
from kubeemu import Fault
from operator_harness import JOB_BACKEND, cpt_body, new_bucket, run_to_end, wait_for

from cpt_operator.kube import jobs


def _cond(status: dict, ctype: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == ctype), {})


def test_a_failing_pass_becomes_a_condition_and_one_event_with_backoff(emulator, emu_world, emu_operator):
    world = emu_world
    world.create(cpt_body("broken", world.endpoint, new_bucket(world.endpoint), tasks=1))
    wait_for(lambda: world.jobs("broken"), what="first job")
    # Passes read children from the watch-fed cache (no LIST to fail), so make the write a pass needs fail:
    # suspending the stage job. Every pass tries it again until the fault is gone.
    emulator.inject(Fault(action="update", plural=JOB_BACKEND.plural, status=500, times=-1))
    world.patch_spec("broken", {"suspend": True})
    cond = wait_for(lambda: (c := _cond(world.status("broken"), "Reconciled")) and c["status"] == "False" and c,
                    timeout=20, what="Reconciled=False")
    assert cond["reason"] == "ApiError" and "500" in cond["message"], cond
    start = emulator.call(lambda e: e.stats.faults_injected)
    time.sleep(4)
    failed_passes = emulator.call(lambda e: e.stats.faults_injected) - start
    # CPT_ERROR_BACKOFF 0.1 s, interval 0.5 s: a fixed backoff fails ~40 passes in 4 s; doubling up to the
    # interval ~10
    assert failed_passes <= 14, failed_passes
    events = [e for e in world.events_with("broken", "ReconcileFailed") if e["reason"] == "ReconcileFailed"]
    assert len(events) == 1 and events[0]["type"] == "Warning", events

    emulator.clear_faults()
    wait_for(lambda: any(jobs.is_suspended(JOB_BACKEND, j) for j in world.jobs("broken")), what="suspended")
    world.patch_spec("broken", {"suspend": False})
    status = run_to_end(world, "broken", timeout=30)
    assert status["phase"] == "Succeeded" and not _cond(status, "Reconciled")


def test_error_delay_doubles_and_is_capped():
    assert [error_delay(5, n, cap=30) for n in (1, 2, 3, 4)] == [5, 10, 20, 30]
    assert error_delay(5, 1000, cap=30) == 30


@pytest.mark.parametrize("pattern, words", [
    (r"answer: (\d{99999999999})", "repetition number is too large"),
    ("(" * 700 + "a" + ")" * 700, "nested too deeply"),
    ("(?P<x>a)(?P<x>b)", "redefinition of group name"),
])
def test_regexes_re_compile_cannot_handle_are_spec_errors(pattern, words):
    body = cpt_body("rx", "http://127.0.0.1:9", "bucket-x", tasks=1)
    body["spec"]["tasks"][0]["answerPattern"] = pattern
    with pytest.raises(SpecError) as info:
        validate_resource(body, "cluster")
    assert any("spec.tasks[0].answerPattern" in p and words in p for p in info.value.problems), info.value.problems


def test_cpt_validate_prints_no_traceback(tmp_path):
    body = cpt_body("rx", "http://127.0.0.1:9", "bucket-x", tasks=1)
    body["spec"]["tasks"][0]["answerPattern"] = r"(\d{99999999999})"
    path = tmp_path / "cpt.yaml"
    path.write_text(yaml.safe_dump(body))
    done = subprocess.run([sys.executable, "-m", "cpt_operator.cli", "validate", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "answerPattern" in done.stderr, done.stderr


def test_cpt_plan_storage_prints_no_traceback_when_storage_is_down(tmp_path):
    body = cpt_body("down", "http://127.0.0.1:9", "bucket-x", tasks=1)  # nothing listens on port 9
    path = tmp_path / "cpt.yaml"
    path.write_text(yaml.safe_dump(body))
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "PATH": "/usr/bin:/bin",
           "CPT_ALLOWED_INTERNAL_ENDPOINTS": "127.0.0.1"}
    done = subprocess.run([sys.executable, "-m", "cpt_operator.cli", "plan", "--storage", str(path)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "cannot read" in done.stderr and "s3://bucket-x/down" in done.stderr


def test_the_superscript_two_annotation_does_not_crash_the_planner():
    from datetime import datetime, timezone

    from cpt_core.results import CommittedTask
    from cpt_operator.planner import ACK_REGRESSION_ANNOTATION, Observed, plan, task_spec_hash

    body = cpt_body("sup", "http://127.0.0.1:9", "bucket-x", tasks=3,
                    forgetting={"maxDrop": 0.05, "onRegression": "pause"})
    body["metadata"].update(namespace="default", uid="u", annotations={ACK_REGRESSION_ANNOTATION: "²"})
    spec = validate_resource(body).spec
    names = ["base", "t1", "t2", "t3"]
    rows = [{"t1": 0.2}, {"t1": 0.9}, {"t1": 0.3, "t2": 0.9}]
    done = {i: CommittedTask(i, names[i], task_spec_hash(spec, i), {"tasks": rows[i]}) for i in range(3)}
    p = plan(body, Observed(now=datetime.now(timezone.utc), committed=done))
    assert p.status["phase"] == "Suspended", p.status["message"]  # "²" accepts nothing: still paused
    assert _cond(p.status, "Suspended")["reason"] == "ForgettingRegression"
