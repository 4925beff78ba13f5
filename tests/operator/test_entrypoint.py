"""`python -m cpt_operator` starts the operator (the tests elsewhere use `kopf run -m cpt_operator.kube.kopf_adapter`)."""

from __future__ import annotations

import os
import subprocess
import sys

from operator_harness import cpt_body, new_bucket, wait_for


def test_python_dash_m_runs_the_operator(emu_world, tmp_path):
    world = emu_world
    world.create(cpt_body("entry", world.endpoint, new_bucket(world.endpoint), tasks=1))
    log = open(tmp_path / "operator.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "cpt_operator"], env=dict(os.environ, CPT_METRICS_PORT="0"),
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: world.jobs("entry"), timeout=90, what="the first job from `python -m cpt_operator`")
        # the pass creates the job, then writes the status: a read in between sees no phase yet
        wait_for(lambda: world.status("entry").get("phase") == "Running", timeout=30, what="phase Running")
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def test_bad_settings_fail_at_start():
    result = subprocess.run([sys.executable, "-m", "cpt_operator"], env=dict(os.environ, CPT_METRICS_PORT="http"),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "CPT_METRICS_PORT" in result.stderr
