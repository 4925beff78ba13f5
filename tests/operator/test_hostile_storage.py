"""Issue 26, first "Done when": one tenant's storage endpoint does not stall, crash or bloat the operator.

The operator runs as a separate process (`kopf run`) against the API emulator, with 10 runs whose endpoints
accept connections and never answer, one whose endpoint paginates forever, one that serves an endless manifest;
then a healthy run on moto is created. Its first job must appear within 5 s, the operator's RSS (read from
/proc/<pid>/status) must stay under 300 MB throughout, and every hostile run must get StorageReachable=False
with a reason and message naming its endpoint's problem.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

from operator_harness import cpt_body, new_bucket, wait_for

REPO = Path(__file__).resolve().parents[2]
RSS_LIMIT_MB = 300
JOB_WITHIN_S = 5.0


def _hostile():
    import storage_hostile

    return storage_hostile


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cond(status: dict, ctype: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == ctype), {})


def test_hostile_endpoints_do_not_hold_back_other_runs(emulator, emu_world, tmp_path: Path, capsys):
    world = emu_world
    hostile = _hostile()
    silent = [hostile.Silent() for _ in range(5)]
    paginating = hostile.HostileS3("paginate")
    oversized = hostile.HostileS3("oversized")
    log = open(tmp_path / "operator.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "kopf", "run", "-A", "--standalone", "-m",
                             "cpt_operator.kube.kopf_adapter"], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    peak = [0.0]

    def rss() -> float:
        peak[0] = max(peak[0], _rss_mb(proc.pid))
        return peak[0]

    try:
        hostile_runs = {}
        for i in range(10):
            hostile_runs[f"silent-{i}"] = silent[i % len(silent)].url
        hostile_runs["paginate"] = paginating.url
        hostile_runs["oversized"] = oversized.url
        for name, url in hostile_runs.items():
            world.create(cpt_body(name, url, "tenant-bucket", tasks=1))
        # The hostile reads are in flight (or the operator is still starting): now the healthy tenant.
        wait_for(lambda: rss() and sum(len(s.held) for s in silent) >= 5 and paginating.pages > 0,
                 timeout=30, what="the hostile reads under way")
        start = time.monotonic()
        world.create(cpt_body("healthy", world.endpoint, new_bucket(world.endpoint), tasks=1))
        wait_for(lambda: rss() and world.jobs("healthy"), timeout=JOB_WITHIN_S + 10, interval=0.05,
                 what="the healthy run's first job")
        took = time.monotonic() - start

        def reported() -> dict:
            rss()
            out = {}
            for name in hostile_runs:
                cond = _cond(world.status(name), "StorageReachable")
                if cond.get("status") != "False":
                    return {}
                out[name] = cond
            return out

        conditions = wait_for(reported, timeout=40, interval=0.2, what="every hostile run's condition")
        for _ in range(10):  # a few more seconds of hostile reads going on
            rss()
            time.sleep(0.2)
        assert proc.poll() is None, "the operator exited"
        with capsys.disabled():
            print(f"\n[hostile storage] healthy run's job after {took:.2f} s with {len(hostile_runs)} hostile runs "
                  f"in flight; operator peak RSS {peak[0]:.0f} MB; paginating endpoint served {paginating.pages} "
                  f"pages in all, the oversized one at most {oversized.largest / 2**20:.1f} MiB into one response")
        assert took < JOB_WITHIN_S, took
        assert peak[0] < RSS_LIMIT_MB, peak[0]
        for i in range(10):
            cond = conditions[f"silent-{i}"]
            assert cond["reason"] == "StorageUnavailable", cond
            assert "did not answer within 10 s" in cond["message"] and silent[i % 5].url in cond["message"], cond
        assert conditions["paginate"]["reason"] in ("StorageLimitExceeded", "StorageUnavailable"), conditions
        assert paginating.url in conditions["paginate"]["message"]
        if conditions["paginate"]["reason"] == "StorageLimitExceeded":
            assert "listing" in conditions["paginate"]["message"], conditions["paginate"]
        assert paginating.pages < 200  # capped: the reader stopped following its tokens
        assert conditions["oversized"]["reason"] == "StorageLimitExceeded", conditions["oversized"]
        assert "larger than this reader accepts" in conditions["oversized"]["message"]
        assert 0 < oversized.largest < 64 << 20  # what the reader took, plus the sockets' buffers
        for name in hostile_runs:  # nothing was started for a run whose storage could not be read
            assert not world.jobs(name), name
            assert "until it answers" in world.status(name)["message"] or name in ("paginate", "oversized")
    finally:
        proc.kill()
        proc.wait(10)
        log.close()
        for server in silent:
            server.close()
        paginating.close()
        oversized.close()
        if sys.exc_info()[0] is not None:
            print((tmp_path / "operator.log").read_text()[-5000:])
