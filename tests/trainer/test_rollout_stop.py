"""A stage's servers end with its learner (issue 31 item 1, AppWrapper units): the servers' stop route answers
and exits 0, behind the run's token; the learner's rank 0 asks every server of its stage until none is left. (No `from __future__ import annotations`:
FastAPI reads the check's annotation.)"""

import http.server
import os
import signal
import threading

import pytest

from cpt_core import rollout
from cpt_trainer.rollout import stop


def test_only_rank_0_of_a_learner_asked_to_stops_servers():
    env = {rollout.STOP_AT_END_ENV: "1"}
    assert stop.wanted(env, "dns+http://s:8000")
    assert stop.wanted({**env, "RANK": "0"}, "dns+http://s:8000")
    assert not stop.wanted({**env, "RANK": "1"}, "dns+http://s:8000")
    assert not stop.wanted(env, None)
    assert not stop.wanted({}, "dns+http://s:8000")  # cpt run, and a cluster stage without a queue


def test_asks_every_server_until_none_is_listed():
    alive = {"http://10.0.0.1:8000", "http://10.0.0.2:8000"}
    asked = []

    def post(endpoint, token):
        asked.append((endpoint, token))
        alive.discard(endpoint)
        return True

    left = stop.stop_servers(lambda: sorted(alive), "key", post=post, sleep=lambda s: None)
    assert left == [] and sorted(asked) == [("http://10.0.0.1:8000", "key"), ("http://10.0.0.2:8000", "key")]


def test_a_server_that_never_goes_is_reported_not_waited_for_forever():
    now = [0.0]
    left = stop.stop_servers(lambda: ["http://10.0.0.1:8000"], "key", timeout=10, post=lambda e, t: False,
                             sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    assert left == ["http://10.0.0.1:8000"] and now[0] >= 10


def test_a_name_that_no_longer_resolves_means_all_stopped():
    def resolve():
        raise OSError("Name or service not known")
    assert stop.stop_servers(resolve, "key", post=lambda e, t: pytest.fail("nothing to ask")) == []


def test_post_sends_the_token_and_a_closed_port_counts_as_stopped():
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert stop._post(url, "secret")
        assert seen == [(rollout.STOP_ROUTE, "Bearer secret")]
    finally:
        server.shutdown()
        server.server_close()
    assert stop._post(url, "secret"), "nothing listens any more: stopped"


def test_stop_route_answers_then_exits_0_behind_the_token(monkeypatch):
    fastapi = pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from cpt_trainer.rollout import vllm_plugin

    exits = []

    class Timer:
        def __init__(self, delay, fn, args=()):
            self.call = (fn, args)

        def start(self):
            exits.append(self.call)

    monkeypatch.setattr(threading, "Timer", Timer)

    def check_token(request: fastapi.Request) -> None:  # what attach_router puts in front of it
        if request.headers.get("Authorization") != "Bearer key":
            raise fastapi.HTTPException(status_code=401)

    app = fastapi.FastAPI()
    app.include_router(vllm_plugin.stop_router(), dependencies=[fastapi.Depends(check_token)])
    client = TestClient(app)
    assert client.post(rollout.STOP_ROUTE).status_code == 401 and exits == []
    reply = client.post(rollout.STOP_ROUTE, headers={"Authorization": "Bearer key"})
    # vLLM's clean shutdown (SIGTERM to itself), and an exit as the backstop should that hang (a real server:
    # tests/vllm_server/test_stop_route.py)
    assert reply.status_code == 200 and exits == [(os.kill, (os.getpid(), signal.SIGTERM)), (os._exit, (0,))]
