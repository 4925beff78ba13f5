"""`cpt run FILE`: the same planner as the operator, with stage jobs run as local processes.

Loop: observe (committed results in storage + the stage processes this invocation ran) -> plan -> start the
stage the plan asks for as a `cpt-trainer STAGE --config FILE` process -> repeat. The stage config is a file in
the run's state folder.
Resume is free: a rerun observes the committed tasks and the planner continues after the last one.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from cpt_core.api import CptSpec
from cpt_core.protocol import EXIT_BAD_INPUT, EXIT_FAILED, PROGRESS, RESULT, STAGE_WARNING, parse
from cpt_core.results import run_stats
from cpt_core.stage import StageConfig
from cpt_core.storage import load_committed, open_store_for_spec, owner
from cpt_core.validation import SpecError
from cpt_operator import metrics
from cpt_operator.local.display import ProgressDisplay
from cpt_operator.local.launch import Launcher
from cpt_operator.local.preflight import PreflightError, check
from cpt_operator.local.report import build_report, render_markdown, write_report
from cpt_operator.local.resource import LOCAL_NAMESPACE, LOCAL_STATE_DIR, STATUS_FILE, load_resource
from cpt_operator.local.rollout_server import LocalRollout, RolloutServerError
from cpt_operator.planner import Observed, ObservedJob, Plan, plan

EXIT_INTERRUPTED = 130
EXIT_BUSY = 75  # EX_TEMPFAIL: another `cpt run` holds this run; try again when it is done
LOCK_FILE = "run.lock"
LOCAL_WORLD_SIZE = 1  # each stage is one process here, whatever spec.learner asks of a cluster
LOG_TAIL_LINES = 25


@dataclass
class LocalRun:
    """State of one `cpt run` invocation: the stage processes it ran (the local 'jobs')."""

    doc: dict
    spec: CptSpec
    workdir: Path
    display: ProgressDisplay
    base: Path  # the resource file's folder: stage processes run here, so relative paths mean what was written
    launcher: Launcher
    jobs: dict[str, ObservedJob] = field(default_factory=dict)
    rollout: Optional[LocalRollout] = None  # vLLM servers of `rollout.engine: vllm` (cpt_operator.local.rollout_server)
    fatal: Optional[str] = None
    started: dict[str, float] = field(default_factory=dict)
    live: dict[int, dict] = field(default_factory=dict)  # running train stage: its replicas' policy versions
    last: Optional[tuple] = None  # (plan, committed) of the last publish, republished with `live`

    @property
    def name(self) -> str:
        return self.doc["metadata"]["name"]


def run_file(path: str, workdir: Optional[str] = None, metrics_port: int = 9464) -> int:
    display = ProgressDisplay()
    base = Path(path).resolve().parent
    try:
        doc, spec = load_resource(path)
        check(spec, base)
    except (SpecError, PreflightError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("nothing was trained.", file=sys.stderr)
        return EXIT_BAD_INPUT
    store = open_store_for_spec(spec.storage)
    meta = doc["metadata"]
    refused = owner.check(store, meta["uid"], meta["namespace"], meta["name"])  # like the operator's first pass
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        print("nothing was trained.", file=sys.stderr)
        return EXIT_BAD_INPUT
    state_dir = Path(workdir) if workdir else _default_workdir(spec, doc["metadata"]["name"])
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = _claim(state_dir)
    if lock is None:
        holder = (state_dir / LOCK_FILE).read_text(encoding="utf-8", errors="replace").strip() or "unknown"
        print(f"error: another `cpt run` is already running this run ({holder}; lock {state_dir / LOCK_FILE}); "
              "wait for it to finish or stop it, then rerun", file=sys.stderr)
        print("nothing was changed.", file=sys.stderr)
        return EXIT_BUSY
    servers = LocalRollout(spec, base, state_dir.resolve() / "rollout", log=display.log)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
           **servers.client_env()}  # the stages reach the run's servers with its key and their weight-sync backend
    launcher = Launcher(env, state_dir.resolve(), log=display.log)
    run = LocalRun(doc=doc, spec=spec, workdir=state_dir.resolve(), display=display, base=base, launcher=launcher,
                   rollout=servers)
    server = _serve_metrics(metrics_port, display)
    display.log(f"cpt run {doc['metadata']['name']}: {spec.method}, {len(spec.tasks)} tasks, storage {spec.storage.uri}")
    try:
        result = _loop(run, store)
    except KeyboardInterrupt:
        display.log("interrupted: committed tasks are kept; rerun the same command to continue after the last one.")
        return EXIT_INTERRUPTED
    finally:
        if run.rollout is not None:
            run.rollout.stop()
        launcher.close()
        lock.close()
        if server is not None:
            server.shutdown()
    report = build_report(doc["spec"], load_committed(store), result.status)
    keys = write_report(store, report)
    display.log("")
    display.log(render_markdown(report))
    display.log(f"report: {', '.join(spec.storage.uri.rstrip('/') + '/' + k for k in keys)}")
    phase = result.status.get("phase")
    if phase == "Succeeded":
        return 0
    if phase == "Suspended":
        display.log(f"run suspended: {result.status.get('message')}")
        return 0
    print(f"error: run {phase}: {result.status.get('message')}", file=sys.stderr)
    return EXIT_BAD_INPUT if run.fatal else EXIT_FAILED


def _claim(state_dir: Path):
    """Hold the run's lock for this process's lifetime (the kernel drops it on any exit), or None if taken.

    Two `cpt run`s of one run would train the same stage twice and race each other's commits. The lock lives in
    the state folder, so it covers runs on this machine (for s3:// storage: started from the same folder).
    """
    import fcntl

    fh = open(state_dir / LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} since {datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}\n")
    fh.flush()
    return fh


def _default_workdir(spec: CptSpec, name: str) -> Path:
    if "://" not in spec.storage.uri:
        return Path(spec.storage.uri) / LOCAL_STATE_DIR
    return Path(".cpt") / name


def _serve_metrics(port: int, display: ProgressDisplay):
    if port < 0:
        return None
    try:
        server = metrics.serve(port)
    except OSError as exc:
        display.log(f"metrics: not served ({exc}); the run goes on")
        return None
    display.log(f"metrics: {server.url}")
    return server


def _loop(run: LocalRun, store) -> Plan:
    """Observe -> plan -> run one stage, until the plan has nothing left to run."""
    announced: set[int] = set()
    while True:
        committed = load_committed(store)
        observed = Observed(now=datetime.now(timezone.utc), jobs=tuple(run.jobs.values()), committed=committed)
        current = plan(run.doc, observed, mode="local")
        run.doc["status"] = current.status
        _publish(run, current, committed)
        for index in sorted(committed):
            if index not in announced and not run.jobs:
                announced.add(index)
                name = "base model" if index == 0 else f"task {index} {committed[index].name!r}"
                run.display.log(f"    {name}: already committed, not redone")
        if run.fatal:
            current.status["phase"] = "Failed"
            current.status["message"] = run.fatal
            return current
        try:
            urls = run.rollout.apply(current.rollout) if run.rollout is not None else {}
        except RolloutServerError as exc:
            run.fatal = str(exc)
            continue
        todo = [(s.job, s.config.model_copy(update={"rollout_url": urls.get(s.config.task_index),
                                                              "world_size": LOCAL_WORLD_SIZE}))
                for s in current.start if s.job not in run.jobs]
        if not todo:
            if current.status["phase"] in ("Succeeded", "Failed", "Suspended"):
                return current
            if current.requeue_after is None:
                raise RuntimeError(f"planner is waiting on nothing: {current.status.get('message')}")
            run.display.log(f"    waiting {current.requeue_after:.0f} s: {current.status.get('message')}")
            time.sleep(current.requeue_after)
            continue
        for name, cfg in todo:
            _run_stage(run, name, cfg)


def _publish(run: LocalRun, current: Plan, committed: dict) -> None:
    run.last = (current, committed)
    stats = run_stats(committed)
    for index, live in run.live.items():  # what the running train stage read from its rollout replicas
        stats[index] = dict(stats.get(index) or {}, **live)
    metrics.publish(LOCAL_NAMESPACE, run.name, run.doc["spec"], current.status, stats)
    state = {"spec": run.doc["spec"], "status": current.status, "live": run.display.last or None}
    tmp = run.workdir / (STATUS_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(run.workdir / STATUS_FILE)


def _run_stage(run: LocalRun, name: str, cfg: StageConfig) -> None:
    """Run one stage process to completion, streaming its progress; record it as an observed job."""
    config_path = run.workdir / f"{name}.yaml"
    config_path.write_text(cfg.dump_yaml())
    log_path = run.workdir / f"{name}.log"
    run.display.stage_started(cfg.task_index, len(run.spec.tasks), cfg.task_name, cfg.stage, cfg.attempt, name)
    run.jobs[name] = ObservedJob(name, cfg.task_index, cfg.stage, cfg.attempt, "Running")
    started = time.monotonic()
    result: dict = {}
    with open(log_path, "w", encoding="utf-8") as log:
        proc = run.launcher.start([cfg.stage, "--config", str(config_path)], run.base)
        try:
            for line in proc.lines():
                log.write(line)
                message = parse(line)
                if message and message[0] == PROGRESS:
                    if "policy_versions" in message[1] and run.last is not None:
                        run.live.setdefault(cfg.task_index, {}).update(
                            rolloutPolicyVersions=message[1]["policy_versions"], rolloutLearnerStep=message[1].get("step"))
                        _publish(run, *run.last)
                    if "policy_kl" in message[1] and run.last is not None:  # the KL early warning, while it trains
                        run.live.setdefault(cfg.task_index, {})["policyKl"] = message[1]["policy_kl"]
                        _publish(run, *run.last)
                    run.display.update(message[1])
                    _publish_live(run)
                elif message and message[0] == RESULT:
                    result = message[1]
                elif line.startswith(STAGE_WARNING):  # e.g. a tracking server that cannot be reached
                    run.display.log("      " + line.rstrip())
            code = proc.wait()
        except BaseException:
            proc.signal(signal.SIGINT)
            if proc.wait(timeout=30) is None:
                proc.signal(signal.SIGKILL)
                proc.wait(timeout=30)
            raise
    seconds = time.monotonic() - started
    run.live.pop(cfg.task_index, None)  # the stage's readings end with it
    ok = code == 0
    detail = _summary(result) if ok else f"exit code {code}, log {log_path}"
    run.display.stage_finished(ok, seconds, detail)
    if not ok:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
        run.display.log("\n".join("      | " + t for t in tail))
        if code == EXIT_BAD_INPUT:
            run.fatal = f"stage {cfg.stage} of task {cfg.task_name!r} rejected its input (see {log_path})"
    message = "" if ok else (tail[-1] if tail else f"exit code {code}")
    run.jobs[name] = ObservedJob(name, cfg.task_index, cfg.stage, cfg.attempt, "Succeeded" if ok else "Failed",
                                 finished_at=datetime.now(timezone.utc), message=message[:300])


def _publish_live(run: LocalRun) -> None:
    now = time.monotonic()
    if now - run.started.get("live", 0.0) < 2.0:
        return
    run.started["live"] = now
    state_file = run.workdir / STATUS_FILE
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return
    state["live"] = run.display.last
    tmp = run.workdir / (STATUS_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(state_file)


def _summary(result: dict) -> str:
    parts = []
    for key, label in (("kept", "kept"), ("dropped", "dropped"), ("steps", "steps"),
                       ("mean_reward_last", "reward"), ("rollout_tokens", "rollout tokens")):
        if result.get(key) is not None:
            value = result[key]
            parts.append(f"{label} {value:.3f}" if isinstance(value, float) else f"{label} {value}")
    if isinstance(result.get("tasks"), dict):
        parts.append("acc " + ", ".join(f"{k} {v:.2f}" for k, v in result["tasks"].items() if v is not None))
    return ", ".join(parts)
