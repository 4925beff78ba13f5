"""The local rollout server process (cpt_operator.local.rollout_server): failures name the log, nothing leaks."""

import pytest

pytest.importorskip("vllm", reason="vllm is not installed in this venv (make test runs tests/vllm_server in .venv-vllm)")

from cpt_operator.local.rollout_server import RolloutServer, RolloutServerError, RolloutServers  # noqa: E402
from vllm_servers import worker_cpus  # noqa: E402  (tests/support)

pytestmark = [pytest.mark.vllm]


def test_server_that_never_becomes_ready(random_base, tmp_path):
    """A real server given too little time: a clear error naming the log, and the process is gone."""
    server = RolloutServer(random_base, tmp_path / "logs" / "rollout-0.log").start()
    with pytest.raises(RolloutServerError) as err:
        server.wait_ready(timeout=3)
    msg = str(err.value)
    assert "was not ready after 3 s" in msg and str(server.log_path) in msg
    assert not server.alive()
    assert server.log_path.read_text().startswith("$ ")  # the command line heads the log


def test_server_that_exits_at_start(tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    servers = RolloutServers(str(empty), tmp_path / "logs")
    with pytest.raises(RolloutServerError) as err:
        servers.start(timeout=300)
    msg = str(err.value)
    assert "exited with code" in msg and str(tmp_path / "logs" / "rollout-0.log") in msg
    assert not servers.servers[0].alive()


def test_local_rollout_follows_the_planner_intents(random_base, tmp_path):
    """`cpt run`'s executor of RolloutServers intents: start, hand over to the next task, restart a dead one."""
    import os
    import signal

    from cpt_core.api import CptSpec
    from cpt_operator.local.rollout_server import LocalRollout
    from cpt_operator.planner.intents import RolloutServers as Intent

    spec = CptSpec.model_validate({"model": random_base, "method": "grpo", "storage": {"uri": str(tmp_path)},
                                   "tasks": [{"name": "t", "train": "a.jsonl", "eval": "b.jsonl", "reward": "exact"}]})
    logs = []
    rollout = LocalRollout(spec, tmp_path, tmp_path / "rollout", log=logs.append)
    try:
        first = rollout.apply([Intent(1, random_base)])[1]
        # the worker (in the engine core) may run on every core this test may (vLLM's default pins it to core 0,
        # where every local server and the learner would then queue)
        assert worker_cpus(rollout.running[1].servers[0].proc.pid) == os.sched_getaffinity(0)
        assert _status(first + "/v1/models") == 401 and _status(first + "/v1/models", "guess") == 401
        assert _status(first + "/v1/models", rollout.client_env()["CPT_ROLLOUT_API_KEY"]) == 200  # the stages' key
        assert rollout.apply([Intent(2, random_base)]) == {2: first}  # handed over, not restarted
        server = rollout.running[2].servers[0]
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(30)
        again = rollout.apply([Intent(2, random_base)])[2]
        assert rollout.running[2].servers[0].alive() and again != first
        assert any("has stopped" in line for line in logs)
        assert rollout.apply([]) == {} and not rollout.running
    finally:
        rollout.stop()


def _status(url: str, key: str | None = None) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
