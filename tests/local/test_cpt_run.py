"""`cpt run` end to end on the tiny model: report contents, resume after an interruption, bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from .conftest import write_spec

CPT = [sys.executable, "-m", "cpt_operator.cli"]
pytestmark = pytest.mark.slow


def cpt(*args, cwd, timeout=600):
    return subprocess.run([*CPT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


USER_REWARD = """import re


def boxed_exact(completions, answer, **kwargs):
    found = [re.search(r"\\\\boxed\\{([^}]*)\\}", c) for c in completions]
    return [0.9 * (m is not None and m.group(1).strip() == a) + 0.1 * (m is not None) for m, a in zip(found, answer)]
"""


def test_two_task_run_prints_and_writes_report(workspace, tmp_path):
    # A user reward module next to the file, and a run started from another folder: paths in the file (and the
    # module) are relative to the file.
    (workspace / "e2e_rewards.py").write_text(USER_REWARD)
    spec = write_spec(workspace, name="e2e", storage="out-e2e",
                      **{"reverse-eval.jsonl}": "reverse-eval.jsonl, reward: 'e2e_rewards:boxed_exact'}"})
    proc = cpt("run", f"{workspace.name}/{spec.name}", "--metrics-port", "-1", cwd=workspace.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # what a person sees: stages in order, then the report
    order = [out.index(s) for s in ("==> base model: evaluate", "==> task 1/2 'reverse': filter",
                                    "==> task 1/2 'reverse': train", "==> task 1/2 'reverse': evaluate",
                                    "==> task 2/2 'add': filter", "==> task 2/2 'add': evaluate")]
    assert order == sorted(order)
    assert "## Accuracy matrix" in out and "| AA | BWT | Forgetting |" in out
    run_dir = workspace / "out-e2e"
    report = json.loads((run_dir / "report.json").read_text())
    assert report["phase"] == "Succeeded" and report["completedTasks"] == 2
    assert report["tasks"] == ["reverse", "add"] and report["benchmarks"] == ["copy"]
    assert len(report["matrix"]) == 3  # base + two tasks
    assert report["matrix"][1][1] is None  # task 2 not evaluated before it was seen
    assert all(v is not None for v in report["matrix"][2])
    aa = sum(report["matrix"][2]) / 2
    assert report["averageAccuracy"] == pytest.approx(aa)
    assert report["backwardTransfer"] == pytest.approx(report["matrix"][2][0] - report["matrix"][1][0])
    rif = {t["name"]: t for t in report["perTask"]}
    assert rif["reverse"]["kept"] + rif["reverse"]["dropped"] == 24
    assert rif["reverse"]["rolloutTokens"] > 0 and set(rif["reverse"]["seconds"]) == {"filter", "train", "evaluate"}
    assert (run_dir / "report.md").read_text().startswith("# Continual post-training report")
    assert (run_dir / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for index, name in ((0, "base"), (1, "reverse"), (2, "add")):
        assert (run_dir / "tasks" / f"{index}-{name}" / "manifest.json").is_file()

    status = cpt("status", "out-e2e", cwd=workspace)
    assert status.returncode == 0 and "Phase: **Succeeded**" in status.stdout
    assert report["tasks"][0] in status.stdout

    again = cpt("run", spec.name, "--metrics-port", "-1", cwd=workspace)
    assert again.returncode == 0
    assert "==>" not in again.stdout  # nothing redone
    assert "task 2 'add': already committed, not redone" in again.stdout

    # The project folder moved (or cloned elsewhere): the run is still recognised, nothing is redone.
    moved = tmp_path / "elsewhere" / "project"
    shutil.copytree(workspace, moved)
    after_move = cpt("run", str(moved / spec.name), "--metrics-port", "-1", cwd=tmp_path)
    assert after_move.returncode == 0, after_move.stdout[-3000:] + after_move.stderr[-3000:]
    assert "==>" not in after_move.stdout and "task 2 'add': already committed, not redone" in after_move.stdout


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_interrupted_run_resumes_without_redoing_task1(workspace):
    # GRPO without RIF and 30 steps: task 2 trains for seconds (with RIF the base solves no `add` prompt, the
    # task ends in well under a second, and the interrupt below could land after the run had finished)
    spec = write_spec(workspace, name="resume", storage="out-resume", method="grpo", max_steps=30)
    run_dir = workspace / "out-resume"
    port = _free_port()
    # SIGINT back to its default in the child: a shell that starts this test suite in the background (`... &`)
    # leaves SIGINT ignored, Python then installs no KeyboardInterrupt handler, and the interrupt below is lost
    proc = subprocess.Popen([*CPT, "run", spec.name, "--metrics-port", str(port)], cwd=workspace,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    state = run_dir / ".cpt-local"
    deadline = time.time() + 300
    while time.time() < deadline and not list(state.glob("resume-2-*.log")):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.5)
    assert list(state.glob("resume-2-*.log")), "task 2 never started"
    manifest1 = run_dir / "tasks" / "1-reverse" / "manifest.json"
    before = manifest1.read_bytes()
    # while running, the same metrics the operator exports are served on localhost
    scrape = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'cpt_task_accuracy{' in scrape and 'cpt="resume"' in scrape
    # a second `cpt run` of the same run is refused while the first holds it, and changes nothing. The first is
    # held still meanwhile (SIGSTOP: its stage process may finish, nothing new starts or commits), so that the
    # interrupt below lands during task 2 however slow this machine is.
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        second = cpt("run", spec.name, "--metrics-port", "-1", cwd=workspace, timeout=120)
    finally:
        proc.send_signal(signal.SIGINT)  # delivered first thing when it continues
        os.kill(proc.pid, signal.SIGCONT)
    assert second.returncode == 75, second.stdout[-2000:] + second.stderr[-2000:]
    assert f"already running this run (pid {proc.pid} since" in second.stderr and "nothing was changed" in second.stderr
    assert "==>" not in second.stdout and manifest1.read_bytes() == before
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:]
    assert "rerun the same command to continue" in out
    assert not (run_dir / "tasks" / "2-add" / "manifest.json").exists()

    rerun = cpt("run", spec.name, "--metrics-port", "-1", cwd=workspace)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-2000:]
    assert "task 1 'reverse': already committed, not redone" in rerun.stdout
    assert "==> task 1/2" not in rerun.stdout and "==> base model" not in rerun.stdout
    assert "==> task 2/2 'add'" in rerun.stdout
    assert manifest1.read_bytes() == before  # task 1 untouched
    assert json.loads((run_dir / "report.json").read_text())["phase"] == "Succeeded"


@pytest.mark.parametrize("change,expected", [
    ({"add-train.jsonl": "missing-train.jsonl"}, "spec.tasks[1].train (add)"),
    ({"reward: numeric": "reward: numerc"}, "spec.tasks[1].reward (add): unknown reward 'numerc'"),
    ({"reward: numeric": "reward: nosuchmod:fn"}, "cannot import module 'nosuchmod'"),
    ({"groupSize: 4": "groupSize: 1"}, "spec.grpo.groupSize"),
    ({"model: base": "model: nowhere"}, "spec.model: no model at"),
])
def test_bad_input_stops_before_training(workspace, change, expected):
    spec = write_spec(workspace, name="bad", storage="out-bad", **change)
    proc = cpt("run", spec.name, "--metrics-port", "-1", cwd=workspace, timeout=120)
    assert proc.returncode == 2
    assert expected in proc.stderr, proc.stderr
    assert "nothing was trained" in proc.stderr
    assert not (workspace / "out-bad" / "tasks").exists()
