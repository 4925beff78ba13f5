"""CPU per request of the two clients a run's first pass uses: boto3 (the storage claim: a bounded LIST and a
conditional PUT of owner.json) against moto, and the operator's kubernetes client (`kube.rest.client.Kube`, a POST
of a ConfigMap) against the strict emulator. Client-side CPU only (time.process_time of this process; each
server is its own process), one thread, after a warm-up.

    OMP_NUM_THREADS=1 .venv/bin/python bench/operator_scale/request_cost.py [-n 300]

Why: a run's first pass costs the operator ~11-14 ms of CPU against ~2 ms for a bare client that only sends the
3 creates (RESULTS.md); this says how much of that the requests themselves cost with these clients.
Note: moto's server (werkzeug) closes every connection, so each boto3 request here also opens one; real S3
keeps connections alive.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import boto3
import psutil
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import ACCESS, BUCKET, SECRET, Emulator, cpu_seconds, start_moto  # noqa: E402


def cpu_ms(n: int, call: Callable[[int], object], server: psutil.Process | None = None) -> tuple[float, float]:
    """(client, server) CPU ms per call; the server's is its whole process's (user + system)."""
    for i in range(20):
        call(100000 + i)
    start, server0 = time.process_time(), cpu_seconds(server) if server else math.nan
    for i in range(n):
        call(i)
    client = (time.process_time() - start) / n * 1000
    return client, ((cpu_seconds(server) - server0) / n * 1000 if server else math.nan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300, help="requests of each kind")
    n = parser.parse_args(argv).n
    rows = {}
    moto, endpoint = start_moto()
    moto_ps = psutil.Process(moto.pid)
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS,
                          aws_secret_access_key=SECRET, config=Config(s3={"addressing_style": "path"}))
        rows["boto3 LIST (bounded, owner.json..tasks/)"] = cpu_ms(n, lambda i: s3.list_objects_v2(
            Bucket=BUCKET, Prefix=f"cost/r{i}/", StartAfter=f"cost/r{i}/owner.jso"), moto_ps)
        rows["boto3 conditional PUT of owner.json"] = cpu_ms(n, lambda i: s3.put_object(
            Bucket=BUCKET, Key=f"cost/r{i}/owner.json", Body=b'{"uid": "u"}', IfNoneMatch="*"), moto_ps)
    finally:
        moto.stdin.close()  # type: ignore[union-attr]
        moto.wait(10)
    emu = Emulator(tempfile.mkdtemp(prefix="cpt-cost-"))
    try:
        from cpt_operator.kube.rest.client import Kube

        kube = Kube.connect(emu.kubeconfig)
        rows["kubernetes client POST ConfigMap"] = cpu_ms(n, lambda i: kube.request(
            "POST", "/api/v1/namespaces/default/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cost-{i}"}, "data": {"a": "x" * 1200}}), emu.ps)
        kube.close()
    finally:
        emu.stop()
    kube_ms = rows["kubernetes client POST ConfigMap"][0]
    print("| request | client CPU per request (ms) | / kubernetes client POST | server CPU per request (ms) |\n"
          "|---|---:|---:|---:|")
    for name, (ms, server_ms) in rows.items():
        print(f"| {name} | {ms:.2f} | {ms / kube_ms:.1f}x | {server_ms:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
