"""How `cpt run` starts stages: the fork server (real forks of a process that imported the trainer) and the plain
subprocess fallback give the runner the same lines, exit codes and signals."""

import json
import os
import signal
import sys
import time

import pytest

from cpt_operator.local.launch import ForkedStage, ForkServer, Launcher, SubprocessStage

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    """One fork server for the file: its start-up imports the trainer (14 s alone, minutes on a loaded machine), and
    each test below also checks that the server outlives the stages it forked."""
    launcher = Launcher(ENV, tmp_path_factory.mktemp("launcher"))
    yield launcher
    launcher.close()


def _run(stage):
    lines = list(stage.lines())
    return lines, stage.wait()


def test_fork_server_runs_stages_in_the_given_folder_and_reports_exit_codes(launcher, tmp_path):
    first = launcher.start(["synth", "reverse", "--n", "3", "--out", "rev.jsonl"], tmp_path)
    assert isinstance(first, ForkedStage) and first.pid != os.getpid()
    lines, code = _run(first)
    assert code == 0, lines
    rows = [json.loads(r) for r in (tmp_path / "rev.jsonl").read_text().splitlines()]  # relative to cwd
    assert len(rows) == 3 and all({"prompt", "answer"} <= set(r) for r in rows)
    assert any(line.startswith("CPT_RESULT ") for line in lines)
    # the same server forks the next stage (no second start-up), and bad input keeps its exit code 2
    server = launcher.server
    second = launcher.start(["synth", "no-such-skill", "--n", "1", "--out", "x.jsonl"], tmp_path)
    lines, code = _run(second)
    assert launcher.server is server and second.pid != first.pid
    assert code == 2 and any("no-such-skill" in line for line in lines), lines


def test_a_stage_that_is_killed_or_interrupted_reports_it(launcher, tmp_path):
    stage = launcher.start(["build-base", "--out", str(tmp_path / "m")], tmp_path)  # minutes of work
    time.sleep(1.0)
    stage.signal(signal.SIGINT)  # what `cpt run` does on Ctrl-C
    assert stage.wait(timeout=60) == 130
    stage = launcher.start(["build-base", "--out", str(tmp_path / "m")], tmp_path)
    time.sleep(0.5)
    stage.signal(signal.SIGKILL)
    assert stage.wait(timeout=60) == -signal.SIGKILL
    assert stage.wait(timeout=0) == -signal.SIGKILL  # asking again gives the same answer
    # the server survives its stages' deaths
    lines, code = _run(launcher.start(["synth", "copy", "--n", "1", "--out", "c.jsonl"], tmp_path))
    assert code == 0, lines


def test_wait_with_a_deadline_returns_none_while_the_stage_runs(launcher, tmp_path):
    stage = launcher.start(["build-base", "--out", str(tmp_path / "m")], tmp_path)
    assert stage.wait(timeout=0.5) is None
    stage.signal(signal.SIGKILL)
    assert stage.wait(timeout=60) == -signal.SIGKILL


def test_plain_subprocesses_when_the_fork_server_is_off_or_cannot_start(tmp_path, monkeypatch):
    off = Launcher({**ENV, "CPT_FORKSERVER": "0"}, tmp_path)
    stage = off.start(["synth", "copy", "--n", "2", "--out", "c.jsonl"], tmp_path)
    assert isinstance(stage, SubprocessStage)
    assert _run(stage)[1] == 0 and len((tmp_path / "c.jsonl").read_text().splitlines()) == 2
    said = []
    monkeypatch.setattr(ForkServer, "command", [sys.executable, "-c", "print('not a fork server')"])
    broken = Launcher(ENV, tmp_path, log=said.append)
    stage = broken.start(["synth", "copy", "--n", "1", "--out", "d.jsonl"], tmp_path)
    assert isinstance(stage, SubprocessStage) and _run(stage)[1] == 0
    assert said and "fork server unavailable" in said[0] and "not a fork server" in said[0]
    off.close()
    broken.close()
