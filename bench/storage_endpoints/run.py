"""Operator memory and idle CPU with runs on many distinct storage endpoints (issue 26; goal: < 250 MB RSS and
< 5% of a core at 100 endpoints).

Real processes: the API emulator (bench/operator_scale/emulator_server.py), moto S3, and the operator
(`python -m cpt_operator`). Each run names its own endpoint: a port of a TCP forwarder in this process in front
of the one moto server, so the operator sees N distinct endpoint URLs (N S3 clients) while S3 itself stays one
process. The storage resync is set to 60 s (the chart's default is 600 s) so that the idle window holds every
run's periodic re-read, a conservative idle figure.

    python bench/storage_endpoints/run.py              # 100 endpoints, 120 s idle; writes RESULTS.md
    python bench/storage_endpoints/run.py --quick      # 20 endpoints, 20 s idle; prints only
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import kubernetes
import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "bench" / "operator_scale"))
from procs import ACCESS, BUCKET, SECRET, Emulator, Sampler, cpu_seconds, start_moto, stop_process  # noqa: E402

GROUP, VERSION, PLURAL, NAMESPACE = "cpt.dev", "v1alpha1", "continualposttrainings", "default"
GOAL_RSS_MB, GOAL_IDLE_CPU = 250.0, 5.0


class Forwarder(threading.Thread):
    """N listening ports on 127.0.0.1, each piping to `upstream`: N endpoint URLs, one S3 server."""

    def __init__(self, upstream_port: int, n: int) -> None:
        super().__init__(daemon=True)
        self.upstream_port, self.n = upstream_port, n
        self.ports: list[int] = []
        self.ready = threading.Event()

    def run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        servers = [await asyncio.start_server(self._handle, "127.0.0.1", 0) for _ in range(self.n)]
        self.ports = [s.sockets[0].getsockname()[1] for s in servers]
        self.ready.set()
        await asyncio.Event().wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))


def body(name: str, endpoint: str) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ContinualPostTraining", "metadata": {"name": name},
        "spec": {
            "model": "s3://models/tiny/", "method": "sft",
            "tasks": [{"name": "t1", "train": "s3://data/t1/train.jsonl", "eval": "s3://data/t1/eval.jsonl",
                       "reward": "exact"}],
            "storage": {"uri": f"s3://{BUCKET}/{name}/", "endpoint": endpoint, "pathStyle": True},
        },
    }


def measure(n: int, idle: float, settle: float) -> dict:
    moto, endpoint = start_moto()
    forwarder = Forwarder(int(endpoint.rsplit(":", 1)[1]), n)
    forwarder.start()
    forwarder.ready.wait(30)
    workdir = tempfile.mkdtemp(prefix="cpt-endpoints-")
    emu = Emulator(workdir)
    env = dict(os.environ, KUBECONFIG=emu.kubeconfig, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
               CPT_ALLOWED_INTERNAL_ENDPOINTS="127.0.0.1", CPT_METRICS_PORT="0", CPT_RECONCILE_INTERVAL="60")
    log = open(Path(workdir) / "operator.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "cpt_operator"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=str(REPO))
    ps = psutil.Process(proc.pid)
    sampler = Sampler(ps)
    sampler.start()
    client = kubernetes.config.new_client_from_config(config_file=emu.kubeconfig)
    co = kubernetes.client.CustomObjectsApi(client)
    try:
        start = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: co.create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL, body(f"ep-{i:03d}", f"http://127.0.0.1:{forwarder.ports[i]}")),
                range(n)))
        while emu.ask("count").get("pytorchjobs", 0) < n:
            if proc.poll() is not None or time.monotonic() - start > 300:
                raise RuntimeError(f"operator: {emu.ask('count')} after {time.monotonic() - start:.0f} s; log "
                                   f"{Path(workdir) / 'operator.log'}")
            time.sleep(0.1)
        all_jobs = time.monotonic() - start
        time.sleep(settle)
        cpu0, t0 = cpu_seconds(ps), time.monotonic()
        time.sleep(idle)
        idle_cpu = 100.0 * (cpu_seconds(ps) - cpu0) / (time.monotonic() - t0)
        rss = ps.memory_info().rss / 2**20
        return {"endpoints": n, "all_jobs_s": all_jobs, "rss_mb": rss, "peak_mb": sampler.peak / 2**20,
                "idle_cpu": idle_cpu, "idle_s": idle, "threads": ps.num_threads()}
    finally:
        sampler.done.set()
        stop_process(proc)
        log.close()
        emu.stop()
        moto.stdin.close()  # type: ignore[union-attr]
        moto.wait(15)
        client.close()


def report(r: dict) -> str:
    ok = r["peak_mb"] < GOAL_RSS_MB and r["idle_cpu"] < GOAL_IDLE_CPU
    return "\n".join([
        "| endpoints (= runs) | all first jobs | RSS after | peak RSS | idle CPU (resync 60 s) | threads | goal |",
        "|---|---|---|---|---|---|---|",
        f"| {r['endpoints']} | {r['all_jobs_s']:.1f} s | {r['rss_mb']:.0f} MB | {r['peak_mb']:.0f} MB | "
        f"{r['idle_cpu']:.1f}% of a core over {r['idle_s']:.0f} s | {r['threads']} | "
        f"{'met' if ok else 'MISSED'} (< {GOAL_RSS_MB:.0f} MB, < {GOAL_IDLE_CPU:.0f}%) |",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 endpoints, 20 s idle, no RESULTS.md")
    parser.add_argument("--endpoints", type=int, default=None)
    parser.add_argument("--idle", type=float, default=None)
    args = parser.parse_args()
    n = args.endpoints or (20 if args.quick else 100)
    idle = args.idle or (20.0 if args.quick else 120.0)
    result = measure(n, idle, settle=5.0 if args.quick else 15.0)
    table = report(result)
    print(table)
    if not args.quick:
        (HERE / "RESULTS.md").write_text(
            f"# Operator RSS and idle CPU with runs on distinct storage endpoints\n\n"
            f"Measured {date.today().isoformat()} by `python bench/storage_endpoints/run.py` on {os.cpu_count()} CPU "
            f"cores shared with other work (load {os.getloadavg()[0]:.1f}). The operator, the API emulator and "
            f"moto are separate processes; each run names its own endpoint URL.\n\n{table}\n\n"
            "Before issue 26 (a boto3 Session per client, an LRU of 16 clients): 458-483 MiB and 65% of a core "
            "at 100 endpoints, every client rebuilt each resync. Now every client is made from one shared "
            "botocore loader (cpt_core/storage/s3client.py: ~0.4 MB and ~15 ms each) and the cache keeps 256.\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
