"""Prometheus exporter: a run's forgetting metrics and the operator's own health (docs/metrics.md lists them all).

Why a custom collector instead of labelled Gauges: a run's series set changes shape as it progresses (a task
leaves the `train` stage, a matrix row appears, a resource is deleted). With Gauges every stale label set would
have to be tracked and `remove()`d by hand; here `publish()` computes the run's complete snapshot from its
spec + status (the status is recomputed from the world on every pass, so it is the truth) and replaces the old
snapshot atomically, and `forget()` drops it. Nothing stale can survive a publish.

Labels stay bounded: `namespace`, `cpt`, task and benchmark names (at most 100 + 50 per run, from the spec),
`after_task` (a matrix row: `base` or a task name) with its `after_index` (0..T, 1:1 with after_task: it only
exists so that Grafana can sort rows chronologically), `stage` (filter|train|evaluate), `phase` (5 values).

The operator imports no torch; `cpt_core.forgetting` is a pure module and supplies the per-row AA/BWT/forgetting.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from cpt_core import api
from cpt_core import forgetting as fm
from cpt_core.stage import BASE_TASK_NAME

BASE = BASE_TASK_NAME  # after_task / task label of matrix row 0 (the base model)
STAGES = api.STAGES
PHASES = api.PHASES
ACTIVE_TASK_PHASES = ("Running", "Retrying")

RUN = ("namespace", "cpt")
TASK = RUN + ("task",)
ROW = ("after_task", "after_index")

# name -> (help, label names). The single list of per-run families: collect() yields them in this order, the
# docs test checks docs/metrics.md mentions each, the dashboard test checks its queries only use exported names.
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "cpt_run_info": ("Always 1; carries the run's method and forgetting.onRegression action.",
                     RUN + ("method", "on_regression")),
    "cpt_run_phase": ("1 for the run's current phase, 0 for the other phases.", RUN + ("phase",)),
    "cpt_run_condition": ("1 if the status condition is True, 0 if False (StorageReachable, StorageIntact, "
                          "Queued, NoTrainingSignal, ForgettingRegression, ...).", RUN + ("condition",)),
    "cpt_run_completed_tasks": ("Tasks trained and evaluated so far (status.completedTasks).", RUN),
    "cpt_run_total_tasks": ("Tasks in the spec (status.totalTasks).", RUN),
    "cpt_forgetting_max_drop": ("spec.forgetting.maxDrop: tolerated drop of a task below its best accuracy.", RUN),
    "cpt_task_index": ("Position of the task in the spec (1..T; 0 is the base model).", TASK),
    "cpt_task_accuracy": ("Accuracy matrix cell a[after_task][task] (after_task=base is the base model).",
                          TASK + ROW),
    "cpt_task_best_accuracy": ("Best accuracy of the task since it was trained (max over rows l >= its own).",
                               TASK),
    "cpt_task_accuracy_drop": ("Best accuracy of the task minus its latest accuracy (>= 0; forgetting of it).",
                               TASK),
    "cpt_average_accuracy": ("AA after the latest task (status.averageAccuracy).", RUN),
    "cpt_backward_transfer": ("BWT after the latest task (status.backwardTransfer); negative = forgetting.", RUN),
    "cpt_forgetting": ("Chaudhry forgetting after the latest task (status.forgetting); positive = forgetting.", RUN),
    "cpt_plasticity": ("Mean learning gain a[j][j] - a[0][j] (status.plasticity).", RUN),
    "cpt_average_accuracy_after_task": ("AA computed from matrix row after_task.", RUN + ROW),
    "cpt_backward_transfer_after_task": ("BWT computed from matrix row after_task.", RUN + ROW),
    "cpt_forgetting_after_task": ("Chaudhry forgetting computed from matrix row after_task.", RUN + ROW),
    "cpt_general_score": ("General benchmark score after a task (after_task=base is the base model).",
                          RUN + ("benchmark",) + ROW),
    "cpt_general_score_drop": ("Base-model score minus the latest score of a general benchmark (> 0 = worse).",
                               RUN + ("benchmark",)),
    "cpt_rif_kept": ("Training prompts RIF kept (prefilter: solved at least minCorrect of N rollouts; online: the "
                     "latest group had unequal rewards).", TASK),
    "cpt_rif_dropped": ("Training prompts RIF dropped (prefilter: solved fewer than minCorrect times; online: the "
                        "latest group's rewards were all equal).", TASK),
    "cpt_rif_filtered_fraction": ("Fraction of the task's training prompts RIF dropped.", TASK),
    "cpt_rif_skipped_groups": ("Online RIF: GRPO groups of the task not rolled out (zero variance before).", TASK),
    "cpt_rif_rollouts_saved": ("Online RIF: completions not sampled thanks to skipped groups.", TASK),
    "cpt_policy_kl": ("KL early warning: latest KL(reference || policy) on the task's own prompts, nats per "
                      "completion (k3 estimator); reference base (the base model) or taskStart (the model the task "
                      "started from). While the task trains (cpt run) or once it is committed.", TASK + ("reference",)),
    "cpt_policy_kl_max": ("Largest KL(reference || policy) estimate of the task's training so far.",
                          TASK + ("reference",)),
    "cpt_rollout_tokens": ("Completion tokens generated by rollouts for the task (RIF + GRPO).", TASK),
    "cpt_learner_steps": ("Optimizer steps the learner took on the task.", TASK),
    "cpt_train_resumed_total": ("Times the task's train stage resumed from a step checkpoint (0: it never stopped "
                                "or started over), as its committed train.json records.", TASK),
    "cpt_rollout_policy_version": ("Learner step whose policy each rollout replica serves, as the running train "
                                   "stage last read it (after each sync, before a re-sync); -1: the replica is "
                                   "down or holds another policy.", TASK + ("replica",)),
    "cpt_rollout_learner_step": ("Learner step of the running train stage's last reading of its replicas "
                                 "(cpt_rollout_policy_version equals it on a healthy fleet).", TASK),
    "cpt_stage_duration_seconds": ("Wall time a finished stage of the task took.", TASK + ("stage",)),
    "cpt_stage_attempts": ("Attempts of the task's stage job (1 = first try; retries add one).", TASK + ("stage",)),
    "cpt_task_active_stage": ("1 while the task is in this stage (Running or Retrying), else 0.",
                              TASK + ("stage",)),
    "cpt_stage_started_timestamp_seconds": (
        "Unix time the running task entered its current stage; only while the run is Running.", TASK + ("stage",)),
}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: tuple[str, ...]  # values in FAMILIES[name] label order
    value: float


def _get(d: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Look a stats key up in camelCase (canonical) or snake_case."""
    if key in d:
        return d[key]
    snake = "".join("_" + c.lower() if c.isupper() else c for c in key)
    return d.get(snake, default)


def _num(value: Any) -> Optional[float]:
    return None if value is None or isinstance(value, bool) else float(value)


Stats = Mapping[Any, Mapping[str, Any]]


@dataclass
class _Out:
    """The samples of one run as they are put; a None value (a figure not known yet) is left out."""

    run: tuple[str, str]
    samples: list[Sample] = field(default_factory=list)

    def put(self, metric: str, labels: tuple[str, ...], value: Any) -> None:
        v = _num(value)
        if v is not None:
            self.samples.append(Sample(metric, self.run + labels, v))


def samples(namespace: str, name: str, spec: Mapping[str, Any], status: Mapping[str, Any],
            stats: Optional[Stats] = None,
            stage_started: Optional[Mapping[tuple[str, str], float]] = None) -> list[Sample]:
    """Every per-run sample of one resource, from its wire-form spec and status (pure; `publish` stores them).

    stats: extras keyed by task index (int or its string) or task name: rolloutTokens, learnerSteps,
    stageDurations {stage: seconds}, trainResumes, stageAttempts {stage: n}, stageStartedAt (unix seconds), kept, dropped,
    rolloutPolicyVersions {replica: step or None} and rolloutLearnerStep (a running train stage's last reading).
    stage_started: {(task, stage): unix seconds} for running tasks without a stageStartedAt in stats.
    """
    spec, status, stats = spec or {}, status or {}, stats or {}
    out = _Out((namespace, name))
    spec_tasks = [t.get("name") for t in spec.get("tasks") or []]
    phase = status.get("phase") or api.CptStatus.field_default("phase")
    _run_samples(out, spec, status, spec_tasks, phase)
    acc = status.get("accuracy") or {}
    names = list(acc.get("tasks") or spec_tasks)
    _matrix_samples(out, names, [list(r or []) for r in acc.get("matrix") or []], status)
    _general_samples(out, names, status.get("general") or {})
    for entry, extras in _task_entries(status, stats, spec_tasks):
        _task_samples(out, entry, extras, phase, stage_started)
    return out.samples


def _run_samples(out: _Out, spec: Mapping[str, Any], status: Mapping[str, Any], spec_tasks: list[str],
                 phase: str) -> None:
    """The run's own series: info (method, onRegression, spec defaults read from the models), phase, conditions,
    task counts, the forgetting guard's maxDrop and each task's position."""
    forgetting_spec = spec.get("forgetting") or {}
    method = spec.get("method") or api.CptSpec.field_default("method")
    on_regression = forgetting_spec.get("onRegression") or api.ForgettingSpec.field_default("on_regression")
    out.put("cpt_run_info", (method, on_regression), 1)
    for p in PHASES:
        out.put("cpt_run_phase", (p,), 1 if p == phase else 0)
    for condition in status.get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("status") in ("True", "False"):
            out.put("cpt_run_condition", (str(condition.get("type")),), 1 if condition["status"] == "True" else 0)
    out.put("cpt_run_completed_tasks", (), status.get("completedTasks") or 0)
    out.put("cpt_run_total_tasks", (), status.get("totalTasks") or len(spec_tasks))
    out.put("cpt_forgetting_max_drop", (), forgetting_spec.get("maxDrop", api.ForgettingSpec.field_default("max_drop")))
    for i, task in enumerate(spec_tasks, start=1):
        out.put("cpt_task_index", (task,), i)


def _row(names: list[str], i: int) -> tuple[str, str]:
    """(after_task, after_index) of matrix row i."""
    return (BASE if i == 0 else (names[i - 1] if i - 1 < len(names) else str(i))), str(i)


def _matrix_samples(out: _Out, names: list[str], matrix: fm.Matrix, status: Mapping[str, Any]) -> None:
    """The accuracy matrix: cells, best/drop per task, per-row summaries (cpt_core.forgetting), current ones."""
    for i, values in enumerate(matrix):
        for j, value in enumerate(values[:len(names)]):
            out.put("cpt_task_accuracy", (names[j],) + _row(names, i), value)
    for j, task in enumerate(names, start=1):
        seen = [v for v in (fm.cell(matrix, l, j) for l in range(j, len(matrix))) if v is not None]
        if seen:
            out.put("cpt_task_best_accuracy", (task,), max(seen))
            out.put("cpt_task_accuracy_drop", (task,), max(seen) - seen[-1])
    for i in range(1, len(matrix)):
        if any(v is not None for v in matrix[i]):
            out.put("cpt_average_accuracy_after_task", _row(names, i), fm.average_accuracy(matrix, i))
            out.put("cpt_backward_transfer_after_task", _row(names, i), fm.backward_transfer(matrix, i))
            out.put("cpt_forgetting_after_task", _row(names, i), fm.forgetting(matrix, i))
    out.put("cpt_average_accuracy", (), status.get("averageAccuracy"))
    out.put("cpt_backward_transfer", (), status.get("backwardTransfer"))
    out.put("cpt_forgetting", (), status.get("forgetting"))
    out.put("cpt_plasticity", (), status.get("plasticity"))


def _general_samples(out: _Out, names: list[str], general: Mapping[str, Any]) -> None:
    """General benchmark scores per matrix row, and each benchmark's drop from the base model to the latest row."""
    benchmarks = list(general.get("benchmarks") or [])
    gmatrix = [list(r or []) for r in general.get("matrix") or []]
    for i, values in enumerate(gmatrix):
        for b, value in enumerate(values[:len(benchmarks)]):
            out.put("cpt_general_score", (benchmarks[b],) + _row(names, i), value)
    for b, bench in enumerate(benchmarks, start=1):
        base = fm.cell(gmatrix, 0, b)
        latest = [v for v in (fm.cell(gmatrix, i, b) for i in range(len(gmatrix))) if v is not None]
        if base is not None and latest:
            out.put("cpt_general_score_drop", (bench,), base - latest[-1])


def _task_entries(status: Mapping[str, Any], stats: Stats,
                  spec_tasks: list[str]) -> list[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    """(status.tasks entry, its stats extras) per task, plus an entry {index, name} for stats of a task the status
    does not list yet."""
    by_index = {str(t.get("index")): t for t in status.get("tasks") or []}

    def task_name(index: Any) -> str:
        entry = by_index.get(str(index))
        if entry and entry.get("name"):
            return entry["name"]
        i = int(index)
        return BASE if i == 0 else (spec_tasks[i - 1] if 0 < i <= len(spec_tasks) else str(i))

    def extras(t: Mapping[str, Any]) -> Mapping[str, Any]:
        for key in (t.get("index"), str(t.get("index")), t.get("name")):
            if key in stats:
                return stats[key]
        return {}

    entries = list(status.get("tasks") or [])
    known = {str(t.get("index")) for t in entries} | {t.get("name") for t in entries}
    for key in stats:
        if str(key) not in known and key not in known:
            idx = int(key) if str(key).isdigit() else (spec_tasks.index(key) + 1 if key in spec_tasks else None)
            if idx is not None:
                entries.append({"index": idx, "name": task_name(idx)})
    return [({**t, "name": t.get("name") or task_name(t.get("index"))}, extras(t)) for t in entries]


def _task_samples(out: _Out, t: Mapping[str, Any], x: Mapping[str, Any], phase: str,
                  stage_started: Optional[Mapping[tuple[str, str], float]]) -> None:
    """One task's series: RIF counts, policy KL, rollout/learner figures, stage durations and attempts, and (for
    a status entry with stage information) the active stage and when it started."""
    task = t["name"]
    kept, dropped = _get(x, "kept", t.get("kept")), _get(x, "dropped", t.get("dropped"))
    fraction = t.get("filteredFraction")
    if fraction is None and kept is not None and dropped is not None and kept + dropped > 0:
        fraction = dropped / (kept + dropped)
    out.put("cpt_rif_kept", (task,), kept)
    out.put("cpt_rif_dropped", (task,), dropped)
    out.put("cpt_rif_filtered_fraction", (task,), fraction)
    out.put("cpt_rif_skipped_groups", (task,), t.get("skippedGroups"))
    out.put("cpt_rif_rollouts_saved", (task,), t.get("rolloutsSaved"))
    for ref, reading in (t.get("policyKl") or _get(x, "policyKl") or {}).items():
        out.put("cpt_policy_kl", (task, ref), (reading or {}).get("last"))
        out.put("cpt_policy_kl_max", (task, ref), (reading or {}).get("max"))
    out.put("cpt_rollout_tokens", (task,), _get(x, "rolloutTokens"))
    out.put("cpt_learner_steps", (task,), _get(x, "learnerSteps"))
    out.put("cpt_train_resumed_total", (task,), _get(x, "trainResumes"))
    for replica, step in (_get(x, "rolloutPolicyVersions") or {}).items():
        out.put("cpt_rollout_policy_version", (task, str(replica)), -1 if step is None else step)
    out.put("cpt_rollout_learner_step", (task,), _get(x, "rolloutLearnerStep"))
    for stage, seconds in (_get(x, "stageDurations") or {}).items():
        out.put("cpt_stage_duration_seconds", (task, stage), seconds)
    attempts = dict(_get(x, "stageAttempts") or {})
    stage = t.get("stage")
    active = stage in STAGES and t.get("phase") in ACTIVE_TASK_PHASES
    if stage in STAGES and t.get("attempts") is not None:
        attempts.setdefault(stage, t["attempts"])
    for s, n in attempts.items():
        out.put("cpt_stage_attempts", (task, s), n)
    if t.get("phase") is None and not stage:
        return  # synthesised from stats only: no stage information
    for s in STAGES:
        out.put("cpt_task_active_stage", (task, s), 1 if active and s == stage else 0)
    if active and phase == "Running":
        started = _get(x, "stageStartedAt")
        if started is None and stage_started:
            started = stage_started.get((task, stage))
        out.put("cpt_stage_started_timestamp_seconds", (task, stage), started)


class _RunCollector(Collector):
    """Holds the latest snapshot of every published run; collect() merges them into the FAMILIES."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], list[Sample]] = {}
        # (namespace, cpt) -> {(task, stage): the first time publish() saw the task in that stage} (when stats lack
        # it); per run, so a pass costs the same with 10 or 10,000 runs (it scanned every run's stages before)
        self._stage_seen: dict[tuple[str, str], dict[tuple[str, str], float]] = {}

    def publish(self, namespace: str, name: str, spec: Mapping, status: Mapping,
                stats: Optional[Mapping], now: float) -> None:
        run = (namespace, name)
        with self._lock:
            current = {(t.get("name") or "", t.get("stage"))
                       for t in (status or {}).get("tasks") or [] if t.get("stage")}
            seen = self._stage_seen.get(run) or {}
            seen = {key: seen.get(key, now) for key in current}  # stages no longer running are dropped
            if seen:
                self._stage_seen[run] = seen
            else:
                self._stage_seen.pop(run, None)
            self._runs[run] = samples(namespace, name, spec, status, stats, dict(seen))

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._runs.pop((namespace, name), None)
            self._stage_seen.pop((namespace, name), None)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        with self._lock:
            snapshot = [s for run in self._runs.values() for s in run]
        families = {n: GaugeMetricFamily(n, h, labels=list(l)) for n, (h, l) in FAMILIES.items()}
        for s in snapshot:
            families[s.name].add_metric(list(s.labels), s.value)
        yield from families.values()

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily(n, h, labels=list(l)) for n, (h, l) in FAMILIES.items()]


REGISTRY = CollectorRegistry(auto_describe=True)
_RUNS = _RunCollector()
REGISTRY.register(_RUNS)

RECONCILE_TOTAL = Counter("cpt_operator_reconcile", "Reconcile passes of ContinualPostTraining resources.",
                          registry=REGISTRY)
RECONCILE_ERRORS = Counter("cpt_operator_reconcile_errors", "Reconcile passes that raised an error.",
                           registry=REGISTRY)
RECONCILE_DURATION = Histogram("cpt_operator_reconcile_duration_seconds", "Wall time of one reconcile pass.",
                               buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=REGISTRY)


def publish(namespace: str, name: str, spec: Mapping, status: Mapping,
            stats: Optional[Mapping] = None, now: Optional[float] = None) -> None:
    """Set every per-run series of one resource from its spec and status (wire form, camelCase), replacing the
    previous snapshot. Call after each reconcile pass (or local executor step) with the status just written.
    API models (CptSpec / CptStatus) are accepted too and converted with `.wire()`."""
    spec, status = (x.wire() if hasattr(x, "wire") else x for x in (spec, status))
    _RUNS.publish(namespace, name, spec or {}, status or {}, stats, time.time() if now is None else now)


def forget(namespace: str, name: str) -> None:
    """Remove every series of a resource (call from the delete handler)."""
    _RUNS.forget(namespace, name)


def observe_reconcile(seconds: float, error: bool) -> None:
    """Count one reconcile pass, its outcome and its latency."""
    RECONCILE_TOTAL.inc()
    if error:
        RECONCILE_ERRORS.inc()
    RECONCILE_DURATION.observe(seconds)


@dataclass
class Server:
    """A running /metrics endpoint (any path answers; port 0 picks a free port)."""

    port: int
    addr: str
    _httpd: Any
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.addr in ("0.0.0.0", "") else self.addr
        return f"http://{host}:{self.port}/metrics"

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def serve(port: int, addr: str = "127.0.0.1") -> Server:
    """Serve REGISTRY over HTTP in a daemon thread. The operator passes addr="0.0.0.0" in a pod; `cpt run`
    keeps the default so a laptop does not expose its metrics."""
    httpd, thread = start_http_server(port, addr=addr, registry=REGISTRY)
    return Server(port=httpd.server_port, addr=addr, _httpd=httpd, _thread=thread)
