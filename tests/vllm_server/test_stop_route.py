"""A real vLLM server started stoppable (cpt_core.rollout.STOPPABLE_ENV, as a stage's AppWrapper starts them) ends
with exit code 0 when its learner asks (cpt_trainer.rollout.stop): only with the run's token, and the whole
server with it, so an AppWrapper sees every pod of the unit succeed and gives the quota back."""

import os
import time

import pytest

pytest.importorskip("vllm", reason="vllm is not installed in this venv (make test runs tests/vllm_server in .venv-vllm)")

from vllm_servers import TOKEN  # noqa: E402

from cpt_core import rollout  # noqa: E402
from cpt_operator.local.rollout_server import RolloutServer  # noqa: E402
from cpt_trainer.rollout import stop  # noqa: E402

pytestmark = [pytest.mark.vllm]


def test_a_stoppable_server_exits_0_when_its_learner_asks_with_the_token(random_base, tmp_path):
    server = RolloutServer(random_base, tmp_path / "rollout-0.log", token=TOKEN,
                           env={**os.environ, rollout.STOPPABLE_ENV: "1"}).start()
    try:
        server.wait_ready()
        assert stop._post(server.url, "not-the-token") is False  # refused: a stranger cannot end the unit
        time.sleep(1.0)
        assert server.alive()
        left = stop.stop_servers(lambda: [server.url] if server.alive() else [], TOKEN, timeout=120)
        assert left == [] and server.proc.wait(60) == 0, server.log_path.read_text()[-3000:]
        # vLLM's clean shutdown: its engine processes (same process group) end with the server, none left behind
        deadline = time.monotonic() + 30
        while _live_in_group(server.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _live_in_group(server.proc.pid), _live_in_group(server.proc.pid)
    finally:
        server.stop()


def _live_in_group(pgid: int) -> list[str]:
    """Processes of the server's group that still run (zombies waiting for their reaper do not count)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(pid)
    return out
