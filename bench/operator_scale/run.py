"""Operator scale: N ContinualPostTraining resources created at once on the emulated API server; time until each
has its first stage's children (the ConfigMap and PyTorchJob of task 0 `evaluate`), the operator's RSS and CPU,
side by side with a bare client that creates the same children (bench/operator_scale/baseline.py).

    .venv/bin/python bench/operator_scale/run.py            # full: 1,000 resources; writes RESULTS.md
    .venv/bin/python bench/operator_scale/run.py --quick    # smoke: 20 resources, prints the table only

Every part is its own process, so each one's CPU and memory are its own: the strict API emulator
(tests/support/kubeemu over kmock 0.8, bench/operator_scale/emulator_server.py), moto S3 (the runs' storage: the
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
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import kubernetes
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_report import GOAL_P99_S, GOAL_RSS_MB, curve_table, requests_table, table, verdict  # noqa: E402,F401
from procs import (ACCESS, BUCKET, SECRET, Emulator, Sampler, cpu_seconds, free_port, start_moto,  # noqa: E402
                   stop_process)
from phase import Phase  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
NAMESPACE = "default"
GROUP, VERSION, PLURAL = "cpt.dev", "v1alpha1", "continualposttrainings"
NOTES_MARK = "<!-- notes: kept when run.py rewrites this file -->"


def body(name: str, endpoint: str, prefix: str = "") -> dict:
    """A three-task sft run (the operator tests' shape) whose storage is a prefix of the moto bucket."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "ContinualPostTraining", "metadata": {"name": name},
        "spec": {
            "model": "s3://models/tiny/", "method": "sft",
            "tasks": [{"name": f"t{i}", "train": f"s3://data/t{i}/train.jsonl", "eval": f"s3://data/t{i}/eval.jsonl",
                       "reward": "exact"} for i in range(1, 4)],
            "general": [{"name": "gen", "eval": "s3://data/gen/eval.jsonl"}],
            "storage": {"uri": f"s3://{BUCKET}/{prefix}{name}/", "endpoint": endpoint, "pathStyle": True},
            "retry": {"limit": 1, "backoffSeconds": 0},
        },
    }


def _public(name: str) -> str:
    """A child's name without planner.names.private_name's suffix (an HMAC of the run's uid under the operator's
    key): the operator's children and the ones rendered here for the baseline then match by name."""
    return re.sub(r"-[0-9a-f]{10}$", "", name)


def first_stage_children(names: list[str], endpoint: str, prefix: str = "") -> dict[str, list[dict]]:
    """What the operator's planner creates for each run's first pass (owner uid left as "__UID__")."""
    from cpt_operator import planner
    from cpt_operator.kube.children import render

    os.environ.setdefault("CPT_ALLOWED_INTERNAL_ENDPOINTS", "127.0.0.1")  # validation here as in the operator
    out = {}
    for name in names:
        resource = body(name, endpoint, prefix)
        resource["metadata"].update(namespace=NAMESPACE, uid="__UID__", generation=1)
        plan = planner.plan(resource, planner.Observed(now=datetime.now(timezone.utc)))
        children = render(plan, resource, ()).create
        assert children, f"the planner creates nothing for {name}: {plan.status.get('message')}"
        out[name] = children
    return out


# ------------------------------------------------------------------------------------------- one phase
def metrics_scrape(port: int) -> dict[str, float]:
    # generous: at 10,000 runs the exporter renders ~100,000 series in a process whose threads are still busy
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=120).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(cpt_operator_reconcile(?:_total|_duration_seconds_sum|_duration_seconds_count))\S* (\S+)$",
                     line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def _total(counts: dict[str, int]) -> int:
    return sum(counts.values())


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


def start_jobs(co: Any, children: dict[str, list[dict]], threads: int) -> int:
    """Mark every run's PyTorchJob Running (condition Running=True), as the training operator would."""
    names = [obj["metadata"]["name"] for objs in children.values() for obj in objs if obj["kind"] == "PyTorchJob"]
    status = {"status": {"conditions": [{"type": "Running", "status": "True", "reason": "PyTorchJobRunning",
                                         "message": "bench stand-in for the training operator"}]}}

    def start(name: str) -> None:
        co.patch_namespaced_custom_object_status("kubeflow.org", "v1", NAMESPACE, "pytorchjobs", name, status,
                                                 _preload_content=False)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(start, names))
    return len(names)


def wait_quiet(emu: Emulator, ps: psutil.Process, quiet: float, limit: float = 300.0) -> float:
    """Wait until the server saw no request and the controller used under 5% of a core for `quiet` seconds (a
    pass that changes nothing sends no request but still runs); at most `limit`. Returns the seconds waited."""
    t0 = time.monotonic()
    last, cpu, since = _total(emu.ask("requests")), cpu_seconds(ps), time.monotonic()
    while time.monotonic() - t0 < limit:
        time.sleep(0.5)
        now, cpu_now = _total(emu.ask("requests")), cpu_seconds(ps)
        if now != last or cpu_now - cpu > 0.025:
            since = time.monotonic()
        last, cpu = now, cpu_now
        if time.monotonic() - since >= quiet:
            break
    return time.monotonic() - t0


def run_phase(who: str, n: int, children: dict[str, list[dict]], endpoint: str, storage: psutil.Process,
              workdir: str, settle: float,
              timeout: float, create_threads: int, profile: Optional[str] = None,
              keep_logs: Optional[str] = None, tail: float = 5.0, prefix: str = "") -> Phase:
    phase = Phase(who, n)
    emu = Emulator(workdir)
    env = dict(os.environ, KUBECONFIG=emu.kubeconfig, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               AWS_ACCESS_KEY_ID=ACCESS, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
               CPT_ALLOWED_INTERNAL_ENDPOINTS="127.0.0.1")  # moto on loopback, allowed as an admin would
    metrics_port = free_port()
    log_path = Path(workdir) / f"{who}.log"
    log = open(log_path, "w")
    if who == "operator":
        env.update(CPT_METRICS_PORT=str(metrics_port), CPT_METRICS_ADDR="127.0.0.1")
        cmd = [sys.executable, *(["-m", "cProfile", "-o", os.environ["CPT_BENCH_CPROFILE"]] if os.environ.get("CPT_BENCH_CPROFILE") else []), "-m", "cpt_operator"]
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
                                   "--threads", "--nonblocking", "--gil", "-o", str(HERE / f"profile.{what}.txt")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for what, pid in (("operator", proc.pid), ("emulator", emu.proc.pid))]
    sampler = Sampler(ps)
    sampler.start()
    client = kubernetes.config.new_client_from_config(config_file=emu.kubeconfig)
    co = kubernetes.client.CustomObjectsApi(client)

    def create(name: str) -> None:
        co.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body(name, endpoint, prefix),
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
            log.flush()
            raise RuntimeError(f"{who} did not create the warm-up run's children in 120 s ({counts}); its log "
                               f"ends: {log_path.read_text(errors='replace')[-2000:]}")
        wait_quiet(emu, ps, 2.0)  # the warm-up run's status and event too: none of it counts below
        cpu0, emu0, s30 = cpu_seconds(ps), cpu_seconds(emu.ps), cpu_seconds(storage)
        req0 = emu.ask("requests")
        names = [name for name in children if name != "warmup"]
        with ThreadPoolExecutor(create_threads) as pool:
            list(pool.map(create, names))
        wait_children(n + 1, time.monotonic() + timeout)
        cpu1, emu1, s31 = cpu_seconds(ps), cpu_seconds(emu.ps), cpu_seconds(storage)
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        phase.cpu_s, phase.emulator_cpu_s, phase.storage_cpu_s = cpu1 - cpu0, emu1 - emu0, s31 - s30
        # requests of the controller only (the bench's N creates of the runs are not its requests)
        phase.requests_until_done = _total(emu.ask("requests")) - _total(req0) - n
        # The emulator runs no training operator, so every stage job would stay Pending, and the operator rightly
        # looks for refused pods then (kube/controller/admission.py). A cluster starts them within seconds: so does this
        # stand-in, before the idle window, for both controllers. Then a quiet tail (the passes that read the jobs'
        # new phase, the events posted behind the passes), then nothing happens to any run for `settle` seconds:
        # what the controller costs the server and itself then.
        phase.jobs_started = start_jobs(co, children, create_threads)
        phase.quiet_after_s = wait_quiet(emu, ps, tail)
        req1, cpu2, t1 = emu.ask("requests"), cpu_seconds(ps), time.monotonic()
        time.sleep(settle)
        req2, cpu3 = emu.ask("requests"), cpu_seconds(ps)
        phase.idle_s = time.monotonic() - t1
        phase.settle_cpu_pct = 100 * (cpu3 - cpu2) / phase.idle_s if settle else math.nan
        phase.idle_requests = _diff(req2, req1)
        phase.idle_requests_per_s = _total(phase.idle_requests) / phase.idle_s if settle else math.nan
        phase.peak_rss_mb = sampler.peak / 2**20
        if who == "operator":
            try:
                m = metrics_scrape(metrics_port)
            except OSError as exc:  # the figures below are then missing, the rest of the phase stands
                print(f"operator n={n}: /metrics not read: {exc}", file=sys.stderr)
                m = {}
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
    owner = {(obj["kind"], _public(obj["metadata"]["name"])): run for run, objs in children.items() for obj in objs}
    plural_kind = {"configmaps": "ConfigMap", "pytorchjobs": "PyTorchJob", "trainjobs": "TrainJob",
                   "networkpolicies": "NetworkPolicy", "secrets": "Secret", "services": "Service",
                   "deployments": "Deployment"}
    got: dict[str, list[float]] = {}
    for plural, ns, name, _uid, t in creates:
        run = owner.get((plural_kind.get(plural, ""), _public(name)))
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


def measure(n: int, endpoint: str, storage: psutil.Process, settle: float, args: argparse.Namespace) -> dict[str, dict]:
    """Both controllers on N runs, each on a fresh emulator: {"baseline": row, "operator": row}."""
    rows: dict[str, dict] = {}
    names = [f"run-{i:04d}" for i in range(n)]
    prefix = f"n{n}/"  # each size its own prefixes: a run owns its storage prefix (owner.json)
    children = first_stage_children(["warmup"] + names, endpoint, prefix)
    with tempfile.TemporaryDirectory(prefix="cpt-opscale-") as tmp:
        for who in ("baseline", "operator"):
            workdir = os.path.join(tmp, who)
            os.makedirs(workdir)
            phase = run_phase(who, n, children, endpoint, storage, workdir, settle, args.timeout,
                              args.create_threads, args.profile, args.keep_logs, prefix=prefix)
            rows[who] = phase.row()
            print(f"{who} n={n}: p50 {rows[who]['p50_s']:.2f}s p99 {rows[who]['p99_s']:.2f}s "
                  f"rss {rows[who]['peak_rss_mb']:.0f}MB cpu {rows[who]['cpu_s']:.1f}s "
                  f"idle {rows[who]['settle_cpu_pct']:.2f}% {rows[who]['idle_requests_per_s']:.3f} req/s",
                  file=sys.stderr)
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 resources, short idle window; prints only")
    parser.add_argument("-n", type=int, default=None, help="resources (default 1000, --quick 20)")
    parser.add_argument("--settle", type=float, default=None,
                        help="idle window measured after every run has its children (default 300 s, --quick 1)")
    parser.add_argument("--curve", default="", metavar="N,N,...",
                        help="also measure these sizes (the cost curve), each with --curve-settle idle seconds")
    parser.add_argument("--curve-settle", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every run's children")
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
    settle = args.settle if args.settle is not None else (1.0 if args.quick else 300.0)
    out = args.out or (None if args.quick or args.profile else str(HERE / "RESULTS.md"))
    command = "OMP_NUM_THREADS=1 .venv/bin/python bench/operator_scale/run.py" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    sizes = sorted({int(x) for x in args.curve.split(",") if x.strip()} - {n})

    moto, endpoint = start_moto()
    try:
        storage = psutil.Process(moto.pid)
        rows = measure(n, endpoint, storage, settle, args)
        curve = {n: rows}
        for size in sizes:
            curve[size] = measure(size, endpoint, storage, args.curve_settle, args)
    finally:
        moto.stdin.close()  # type: ignore[union-attr]
        try:
            moto.wait(10)
        except subprocess.TimeoutExpired:
            moto.kill()

    op, base = rows["operator"], rows["baseline"]
    load = os.getloadavg()
    head = (f"{n} ContinualPostTraining resources created at once (8 client threads) on the strict emulated API "
            f"server, then {op['idle_s']:.0f} s with nothing happening; {platform.python_implementation()} "
            f"{platform.python_version()}, {os.cpu_count()} CPUs, load average {load[0]:.1f} at the end; "
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.")
    parts = [head, table(op, base), "Goals: " + verdict(op, base),
             "API requests per run, by verb and resource (whole phase incl. start-up and the warm-up run, divided "
             "by N+1):", requests_table(op, base, n),
             "API requests while idle (whole window, all clients): operator "
             + (json.dumps(op["idle_requests"]) or "{}") + ", baseline " + json.dumps(base["idle_requests"])]
    if len(curve) > 1:
        parts += ["Cost curve (each size its own invocation of both controllers, one after the other; idle "
                  f"window {args.curve_settle:g} s except at N={n}):", curve_table(curve)]
    text = "\n\n".join(parts)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(rows if len(curve) == 1 else {**rows, "curve": curve}, indent=1))
    if out:
        path = Path(out)
        notes = ""
        if path.exists() and NOTES_MARK in path.read_text():
            notes = path.read_text().split(NOTES_MARK, 1)[1]
        path.write_text(f"# Operator scale (issues 9.3, 16)\n\n```\n{command}\n```\n\n{text}\n\n{NOTES_MARK}{notes}")
    missing = sum(r["missing"] for rs in curve.values() for r in rs.values())
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
