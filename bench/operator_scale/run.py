"""Operator scale: N ContinualPostTraining resources created at once on the emulated API server; time until each
has its first stage's children (the ConfigMap and PyTorchJob of task 0 `evaluate`), the operator's RSS and CPU,
side by side with a bare client that creates the same children (bench/operator_scale/baseline.py).

    .venv/bin/python bench/operator_scale/run.py            # full: 1,000 resources; writes RESULTS.md
    .venv/bin/python bench/operator_scale/run.py --quick    # smoke: 20 resources, prints the table only

Every part is its own process, so each one's CPU and memory are its own: the strict API emulator
(tests/kubeemu over kmock 0.8, bench/operator_scale/emulator_server.py), moto S3 (the runs' storage: the
operator reads each run's committed results on every pass), and the controller under test: `python -m
cpt_operator` with the chart's defaults, or the baseline. Each phase gets a fresh emulator, a warm-up resource
(not counted) so both controllers are watching before the clock starts, then the N creates from 8 client
threads. Times are the emulator's own create times (CLOCK_MONOTONIC is system-wide on Linux): latency = the
later of a run's two children minus the run's creation. The machine is shared and noisy: the ratios measured in
the same invocation are the figures; absolute times are context.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import boto3
import kubernetes
import psutil
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_report import GOAL_P99_S, GOAL_RSS_MB, requests_table, table, verdict  # noqa: E402,F401

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NAMESPACE = "default"
GROUP, VERSION, PLURAL = "cpt.dev", "v1alpha1", "continualposttrainings"
ACCESS, SECRET = "AKIABENCH00000000000", "benchSecretKey0000000000000000000000000"
BUCKET = "cpt-bench"
MOTO = ("import sys; from moto.server import ThreadedMotoServer\n"
        "s = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False); s.start()\n"
        "print(s.get_host_and_port()[1], flush=True); sys.stdin.read(); s.stop()\n")
NOTES_MARK = "<!-- notes: kept when run.py rewrites this file -->"


def body(name: str, endpoint: str) -> dict:
    """A three-task sft run (the operator tests' shape) whose storage is a prefix of the moto bucket."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ContinualPostTraining", "metadata": {"name": name},
        "spec": {
            "model": "s3://models/tiny/", "method": "sft",
            "tasks": [{"name": f"t{i}", "train": f"s3://data/t{i}/train.jsonl", "eval": f"s3://data/t{i}/eval.jsonl",
                       "reward": "exact"} for i in range(1, 4)],
            "general": [{"name": "gen", "eval": "s3://data/gen/eval.jsonl"}],
            "storage": {"uri": f"s3://{BUCKET}/{name}/", "endpoint": endpoint, "pathStyle": True},
            "retry": {"limit": 1, "backoffSeconds": 0},
        },
    }


def first_stage_children(names: list[str], endpoint: str) -> dict[str, list[dict]]:
    """What the operator's planner creates for each run's first pass (owner uid left as "__UID__")."""
    from cpt_operator import planner
    from cpt_operator.kube.children import render

    out = {}
    for name in names:
        resource = body(name, endpoint)
        resource["metadata"].update(namespace=NAMESPACE, uid="__UID__", generation=1)
        plan = planner.plan(resource, planner.Observed(now=datetime.now(timezone.utc)))
        children = render(plan, resource, ()).create
        assert children, f"the planner creates nothing for {name}: {plan.status.get('message')}"
        out[name] = children
    return out


# ------------------------------------------------------------------------------------------- processes
class Emulator:
    def __init__(self, workdir: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "emulator_server.py"), workdir],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONWARNINGS="ignore"))
        self.kubeconfig = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        if not self.kubeconfig:
            raise RuntimeError("the emulator did not start")
        self.ps = psutil.Process(self.proc.pid)
        self._lock = threading.Lock()

    def ask(self, cmd: str) -> Any:
        with self._lock:
            self.proc.stdin.write(cmd + "\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
            return json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]

    def stop(self) -> None:
        try:
            self.proc.stdin.write("quit\n")  # type: ignore[union-attr]
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(15)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def start_moto() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", MOTO], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    port = int(proc.stdout.readline())  # type: ignore[union-attr]
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS,
                 aws_secret_access_key=SECRET, config=Config(s3={"addressing_style": "path"})
                 ).create_bucket(Bucket=BUCKET)
    return proc, endpoint


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sampler(threading.Thread):
    """Peak RSS of a process, sampled every 50 ms."""

    def __init__(self, proc: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.proc, self.peak, self.done = proc, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            self.done.wait(0.05)


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------- one phase
@dataclass
class Phase:
    who: str  # operator | baseline
    n: int
    latencies: list[float] = field(default_factory=list)  # seconds, one per run that got its children
    missing: int = 0
    create_span_s: float = 0.0  # first to last run created
    all_done_s: float = 0.0  # first run created -> last run's children
    cpu_s: float = 0.0  # the controller's CPU from the first create to the last child
    settle_cpu_pct: float = 0.0  # the controller's CPU while idle afterwards (resyncs), % of one core
    peak_rss_mb: float = 0.0
    requests: dict[str, int] = field(default_factory=dict)
    emulator_cpu_s: float = 0.0
    passes: Optional[float] = None  # operator only: reconcile passes, and their mean duration
    pass_mean_ms: Optional[float] = None
    log_warnings: int = 0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]

    def row(self) -> dict:
        total = sum(self.requests.values())
        return {"who": self.who, "n": self.n, "p50_s": self.pct(0.50), "p99_s": self.pct(0.99),
                "max_s": max(self.latencies) if self.latencies else math.nan, "missing": self.missing,
                "create_span_s": self.create_span_s, "all_done_s": self.all_done_s,
                "throughput_per_s": (self.n - self.missing) / self.all_done_s if self.all_done_s else math.nan,
                "cpu_s": self.cpu_s, "cpu_ms_per_run": 1000 * self.cpu_s / self.n,
                "settle_cpu_pct": self.settle_cpu_pct, "peak_rss_mb": self.peak_rss_mb,
                "api_requests_per_run": total / (self.n + 1), "emulator_cpu_s": self.emulator_cpu_s,
                "passes_per_run": self.passes, "pass_mean_ms": self.pass_mean_ms, "requests": self.requests,
                "log_warnings": self.log_warnings}


def metrics_scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(cpt_operator_reconcile(?:_total|_duration_seconds_sum|_duration_seconds_count))\S* (\S+)$",
                     line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def run_phase(who: str, n: int, children: dict[str, list[dict]], endpoint: str, workdir: str, settle: float,
              timeout: float, create_threads: int, profile: Optional[str] = None,
              keep_logs: Optional[str] = None) -> Phase:
    phase = Phase(who, n)
    emu = Emulator(workdir)
    env = dict(os.environ, KUBECONFIG=emu.kubeconfig, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1")
    metrics_port = free_port()
    log_path = Path(workdir) / f"{who}.log"
    log = open(log_path, "w")
    if who == "operator":
        env.update(CPT_METRICS_PORT=str(metrics_port), CPT_METRICS_ADDR="127.0.0.1")
        cmd = [sys.executable, "-m", "cpt_operator"]
    else:
        children_file = Path(workdir) / "children.json"
        children_file.write_text(json.dumps(children))
        workers = min(32, (os.cpu_count() or 1) + 4)  # asyncio.to_thread's pool: the operator's pass threads
        cmd = [sys.executable, str(HERE / "baseline.py"), str(children_file), NAMESPACE, str(workers)]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    ps = psutil.Process(proc.pid)
    spies = []
    if profile and who == "operator":  # py-spy on the operator and the emulator, from the warm-up to the last child
        spies = [subprocess.Popen([profile, "record", "--pid", str(pid), "--rate", "100", "--format", "raw",
                                   "--threads", "--nonblocking", "-o", str(HERE / f"profile.{what}.txt")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for what, pid in (("operator", proc.pid), ("emulator", emu.proc.pid))]
    sampler = Sampler(ps)
    sampler.start()
    client = kubernetes.config.new_client_from_config(config_file=emu.kubeconfig)
    co = kubernetes.client.CustomObjectsApi(client)

    def create(name: str) -> None:
        co.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body(name, endpoint),
                                           _preload_content=False)

    def wait_children(want: int, deadline: float) -> dict:
        while True:
            counts = emu.ask("count")
            if min(counts.get("configmaps", 0), counts.get("pytorchjobs", 0)) >= want or time.monotonic() > deadline:
                return counts
            if proc.poll() is not None:
                raise RuntimeError(f"{who} exited with {proc.returncode}; see {log_path}")
            time.sleep(0.05)

    try:
        create("warmup")  # both controllers must be watching before the clock starts
        counts = wait_children(1, time.monotonic() + 120)
        if min(counts.get("configmaps", 0), counts.get("pytorchjobs", 0)) < 1:
            raise RuntimeError(f"{who} did not create the warm-up run's children in 120 s; see {log_path}")
        time.sleep(0.5)
        cpu0, emu0 = cpu_seconds(ps), cpu_seconds(emu.ps)
        names = [name for name in children if name != "warmup"]
        with ThreadPoolExecutor(create_threads) as pool:
            list(pool.map(create, names))
        wait_children(n + 1, time.monotonic() + timeout)
        cpu1, emu1 = cpu_seconds(ps), cpu_seconds(emu.ps)
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        phase.cpu_s, phase.emulator_cpu_s = cpu1 - cpu0, emu1 - emu0
        time.sleep(settle)
        phase.settle_cpu_pct = 100 * (cpu_seconds(ps) - cpu1) / settle if settle else math.nan
        phase.peak_rss_mb = sampler.peak / 2**20
        if who == "operator":
            m = metrics_scrape(metrics_port)
            count = m.get("cpt_operator_reconcile_duration_seconds_count", 0.0)
            phase.passes = count / (n + 1)
            phase.pass_mean_ms = 1000 * m.get("cpt_operator_reconcile_duration_seconds_sum", 0.0) / max(count, 1)
        creates = emu.ask("creates")
        phase.requests = emu.ask("requests")
    finally:
        sampler.done.set()
        stop_process(proc)
        log.close()
        client.close()
        emu.stop()
    if keep_logs:
        os.makedirs(keep_logs, exist_ok=True)
        shutil.copy(log_path, os.path.join(keep_logs, log_path.name))
    phase.log_warnings = sum(1 for line in log_path.read_text(errors="replace").splitlines()
                             if (" WARNING " in line or " ERROR " in line) and "is cancelled" not in line)

    # latencies from the emulator's create times
    children = {k: v for k, v in children.items() if k != "warmup"}
    born = {name: t for plural, ns, name, _uid, t in creates if plural == PLURAL}
    owner = {(obj["kind"], obj["metadata"]["name"]): run for run, objs in children.items() for obj in objs}
    plural_kind = {"configmaps": "ConfigMap", "pytorchjobs": "PyTorchJob", "trainjobs": "TrainJob",
                   "networkpolicies": "NetworkPolicy", "secrets": "Secret", "services": "Service",
                   "deployments": "Deployment"}
    got: dict[str, list[float]] = {}
    for plural, ns, name, _uid, t in creates:
        run = owner.get((plural_kind.get(plural, ""), name))
        if run is not None:
            got.setdefault(run, []).append(t)
    first = min(born[r] for r in children)
    last_done = first
    for run, objs in children.items():
        times = got.get(run, [])
        if len(times) < len(objs):
            phase.missing += 1
            continue
        phase.latencies.append(max(times) - born[run])
        last_done = max(last_done, max(times))
    phase.create_span_s = max(born[r] for r in children) - first
    phase.all_done_s = last_done - first
    return phase


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 resources, short settle; prints only")
    parser.add_argument("-n", type=int, default=None, help="resources (default 1000, --quick 20)")
    parser.add_argument("--settle", type=float, default=None, help="idle seconds measured after (default 10)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every run's children")
    parser.add_argument("--create-threads", type=int, default=8)
    parser.add_argument("--out", default=None, help="write the markdown here (default RESULTS.md unless --quick)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    parser.add_argument("--keep-logs", default=None, metavar="DIR", help="copy the controllers' logs here")
    parser.add_argument("--profile", default=None, metavar="PY_SPY",
                        help="path of a py-spy binary: profile the operator and the emulator into bench/operator_scale/"
                             "profile.{operator,emulator}.txt (collapsed stacks); sampling costs CPU, so no "
                             "RESULTS.md")
    args = parser.parse_args(argv)
    n = args.n or (20 if args.quick else 1000)
    settle = args.settle if args.settle is not None else (1.0 if args.quick else 10.0)
    out = args.out or (None if args.quick or args.profile else str(HERE / "RESULTS.md"))
    command = "OMP_NUM_THREADS=1 .venv/bin/python bench/operator_scale/run.py" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()

    moto, endpoint = start_moto()
    rows: dict[str, dict] = {}
    try:
        names = [f"run-{i:04d}" for i in range(n)]
        children = first_stage_children(["warmup"] + names, endpoint)
        with tempfile.TemporaryDirectory(prefix="cpt-opscale-") as tmp:
            for who in ("baseline", "operator"):
                workdir = os.path.join(tmp, who)
                os.makedirs(workdir)
                phase = run_phase(who, n, children, endpoint, workdir, settle, args.timeout,
                                  args.create_threads, args.profile, args.keep_logs)
                rows[who] = phase.row()
                print(f"{who}: p50 {rows[who]['p50_s']:.2f}s p99 {rows[who]['p99_s']:.2f}s "
                      f"rss {rows[who]['peak_rss_mb']:.0f}MB cpu {rows[who]['cpu_s']:.1f}s", file=sys.stderr)
    finally:
        moto.stdin.close()  # type: ignore[union-attr]
        try:
            moto.wait(10)
        except subprocess.TimeoutExpired:
            moto.kill()

    op, base = rows["operator"], rows["baseline"]
    load = os.getloadavg()
    head = (f"{n} ContinualPostTraining resources created at once (8 client threads) on the strict emulated API "
            f"server; {platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
            f"load average {load[0]:.1f} at the end; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.")
    text = "\n\n".join([head, table(op, base), "Goals: " + verdict(op),
                        "API requests per run, by verb and resource (whole phase incl. start-up and the warm-up "
                        "run, divided by N+1):", requests_table(op, base, n)])
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if out:
        path = Path(out)
        notes = ""
        if path.exists() and NOTES_MARK in path.read_text():
            notes = path.read_text().split(NOTES_MARK, 1)[1]
        path.write_text(f"# Operator scale (issue 9.3)\n\n```\n{command}\n```\n\n{text}\n\n{NOTES_MARK}{notes}")
    missing = op["missing"] + base["missing"]
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
