"""A rollout server that dies while the learner broadcasts weights fails the push with WeightSyncError naming the
servers, not with the transport's bare RuntimeError (gloo names only a socket). The fault is real: the peer of a
real gloo process group is SIGKILLed before the broadcast. The learner side runs in its own process: a gloo group
whose peer died aborts its interpreter at exit, which must not take pytest with it. The push first waits for the
fleet to come back (rollout.fleet, 2 s here: the servers never existed) and then fails saying both.

The whole path (a vLLM server killed mid-stage) is tests/vllm_server/test_stages.py::test_server_dies_mid_stage;
which error surfaces first there (an HTTP call or the broadcast) depends on timing, this test pins the broadcast.
"""

import json
import os
import subprocess
import sys

PEER = """
import sys, time, torch, torch.distributed as dist
from datetime import timedelta
store = dist.TCPStore("127.0.0.1", int(sys.argv[1]), 2, False, timeout=timedelta(seconds=30))
group = dist.ProcessGroupGloo(dist.PrefixStore("sync", store), 1, 2, timedelta(seconds=30))
opts = dist.BroadcastOptions()
opts.rootRank = 0
group.broadcast([torch.empty(1 << 20, dtype=torch.uint8)], opts).wait()  # the first sync
print("received", flush=True)
time.sleep(60)  # then waits, as a server between syncs, until the test kills it
"""

LEARNER = """
import json, os, signal, subprocess, sys
from datetime import timedelta
from types import SimpleNamespace
import torch, torch.distributed as dist
from cpt_trainer.rollout.weight_sync import WeightSync

class Broadcaster:
    '''The transport step of a trainer engine: rank 0 broadcasts a packed chunk to the servers' workers.'''
    def __init__(self, group, model):
        self.group, self.source = group, SimpleNamespace(_module=model)
    def send_weights(self):
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        self.group.broadcast([torch.zeros(1 << 20, dtype=torch.uint8)], opts).wait()
    def shutdown(self):
        pass

store = dist.TCPStore("127.0.0.1", 0, 2, True, timeout=timedelta(seconds=30), wait_for_workers=False)
peer = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(store.port)], stdout=subprocess.PIPE, text=True)
group = dist.ProcessGroupGloo(dist.PrefixStore("sync", store), 0, 2, timedelta(seconds=30))
model = torch.nn.Linear(2, 2)
sync = WeightSync(["http://127.0.0.1:18001", "http://127.0.0.1:18002"], backend="gloo")
sync.engine = Broadcaster(group, model)
sync.push(model)  # both ends alive: the broadcast goes through
assert peer.stdout.readline().strip() == "received"
os.kill(peer.pid, signal.SIGKILL)
peer.wait()
try:
    sync.push(model)
    out = {"type": None}
except Exception as exc:
    out = {"type": type(exc).__name__, "message": str(exc), "cause": type(exc.__cause__).__name__}
print(json.dumps(out), flush=True)
os._exit(0)
"""


def test_a_server_killed_mid_broadcast_fails_the_push_naming_the_servers():
    proc = subprocess.run([sys.executable, "-c", LEARNER, PEER], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "CPT_ROLLOUT_RECOVER_TIMEOUT": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["type"] == "WeightSyncError", out
    assert out["cause"] == "RuntimeError", out  # gloo's own error, kept as the cause
    message = out["message"]
    assert "http://127.0.0.1:18001" in message and "http://127.0.0.1:18002" in message, message
    assert "peer" in message.lower() and "\n" not in message, message  # the transport's first line says what
    assert "not recovered: rollout replicas did not come back in time" in message, message
