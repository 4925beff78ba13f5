"""The end-of-run report: accuracy matrix, AA / BWT / forgetting / plasticity, general scores, RIF and costs.

Built only from committed results (plus the last known status), so `cpt status DIR` shows the same report for
a finished run and for one in progress. Written next to the checkpoints as report.json, report.md and
accuracy.png.
"""

from __future__ import annotations

import io
import json
from typing import Any, Optional

from cpt_core import forgetting as fm
from cpt_core.results import (CommittedTask, no_signal, policy_kl, replayed_prompts, rif_counts,
                              run_stats)
from cpt_core.stage import BASE_TASK_NAME


def build_report(spec: dict, committed: dict[int, CommittedTask], status: Optional[dict] = None) -> dict:
    """A JSON-able report. `spec` is the wire-form spec; rows are the committed prefix 0..k."""
    tasks = [t["name"] for t in spec.get("tasks") or []]
    benches = [b["name"] for b in spec.get("general") or []]
    matrix, general = fm.accuracy_rows(committed, tasks, benches)
    rows = list(range(min(len(matrix), len(tasks) + 1)))
    matrix, general = matrix[:len(rows)], general[:len(rows)]
    last = rows[-1] if rows else 0
    stats = run_stats({i: committed[i] for i in rows})
    per_task = []
    for i in rows:
        rif = rif_counts(committed[i])
        train = committed[i].train or {}
        per_task.append({
            "index": i, "name": BASE_TASK_NAME if i == 0 else tasks[i - 1],
            "kept": rif.get("kept"), "dropped": rif.get("dropped"), "filteredFraction": rif.get("filtered_fraction"),
            "rifMode": rif.get("mode"), "skippedGroups": rif.get("skipped_groups"),
            "rolloutsSaved": rif.get("rollouts_saved"), "policyKl": policy_kl(committed[i]) or None,
            "replayedPrompts": replayed_prompts(committed[i]),
            "rolloutTokens": stats[i]["rolloutTokens"], "stageRolloutTokens": stats[i]["stageRolloutTokens"],
            "learnerSteps": stats[i]["learnerSteps"],
            "seconds": stats[i]["stageDurations"],
            "rewardFirst": train.get("mean_reward_first"), "rewardLast": train.get("mean_reward_last"),
            "noSignal": no_signal(committed[i]),
            "resumedAtStep": train.get("resumed_at_step"), "trainResumes": stats[i]["trainResumes"],
            "evalEngine": (committed[i].eval or {}).get("engine"),
        })
    return {
        "method": spec.get("method"),
        "phase": (status or {}).get("phase") or ("Succeeded" if last == len(tasks) and rows else "Running"),
        "message": (status or {}).get("message"),
        "completedTasks": max(len(rows) - 1, 0),
        "totalTasks": len(tasks),
        "tasks": tasks,
        "matrix": matrix,
        "benchmarks": benches,
        "general": general,
        "averageAccuracy": fm.average_accuracy(matrix, last) if rows else None,
        "backwardTransfer": fm.backward_transfer(matrix, last) if rows else None,
        "forgetting": fm.forgetting(matrix, last) if rows else None,
        "plasticity": fm.plasticity(matrix) if rows else None,
        "generalDrop": fm.general_drop(general, last) if rows and benches else None,
        "perTask": per_task,
        "totals": {
            "rolloutTokens": sum(t["rolloutTokens"] for t in per_task),
            "learnerSteps": sum(t["learnerSteps"] for t in per_task),
            "seconds": round(sum(sum(t["seconds"].values()) for t in per_task), 1),
        },
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.{digits}f}" if digits < 0 else f"{value:.{digits}f}"
    return str(value)


def _signed(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:+.3f}"


def render_markdown(report: dict) -> str:
    """Markdown tables; the same text is printed on the terminal."""
    out = io.StringIO()
    w = out.write
    w(f"# Continual post-training report ({report['method']})\n\n")
    w(f"Phase: **{report['phase']}**, tasks {report['completedTasks']}/{report['totalTasks']}")
    w(f" - {report['message']}\n\n" if report.get("message") else "\n\n")
    w("## Accuracy matrix a[i][j] (row: after training task i; column: evaluated on task j)\n\n")
    w("| after \\ on | " + " | ".join(report["tasks"]) + " |\n")
    w("|---|" + "---|" * len(report["tasks"]) + "\n")
    labels = [BASE_TASK_NAME] + report["tasks"]
    for i, row in enumerate(report["matrix"]):
        w(f"| {labels[i]} | " + " | ".join(_fmt(v) for v in row) + " |\n")
    w("\n## Forgetting metrics (after the last committed task)\n\n")
    w("| AA | BWT | Forgetting | Plasticity | General drop |\n|---|---|---|---|---|\n")
    w(f"| {_fmt(report['averageAccuracy'])} | {_signed(report['backwardTransfer'])} | "
      f"{_fmt(report['forgetting'])} | {_signed(report['plasticity'])} | {_signed(report['generalDrop'])} |\n")
    if report["benchmarks"]:
        w("\n## General benchmarks\n\n| after | " + " | ".join(report["benchmarks"]) + " |\n")
        w("|---|" + "---|" * len(report["benchmarks"]) + "\n")
        for i, row in enumerate(report["general"]):
            w(f"| {labels[i]} | " + " | ".join(_fmt(v) for v in row) + " |\n")
    w("\n## RIF and cost per task\n\n")
    w("| task | kept | dropped | filtered | rollout tokens (filter + train) | learner steps | reward first -> last | "
      "filter s | train s | evaluate s |\n|---|---|---|---|---|---|---|---|---|---|\n")
    for t in report["perTask"]:
        secs = t["seconds"]
        reward = (f"{_fmt(t['rewardFirst'])} -> {_fmt(t['rewardLast'])}"
                  if t["rewardFirst"] is not None else "-")
        w(f"| {t['name']} | {_fmt(t['kept'])} | {_fmt(t['dropped'])} | {_fmt(t['filteredFraction'], 2)} | "
          f"{t['stageRolloutTokens']['filter']} + {t['stageRolloutTokens']['train']} | {t['learnerSteps']} | "
          f"{reward} | {_fmt(secs.get('filter'), 1)} | "
          f"{_fmt(secs.get('train'), 1)} | {_fmt(secs.get('evaluate'), 1)} |\n")
    engines = {t["name"]: t.get("evalEngine") for t in report["perTask"]}
    if len(set(engines.values())) > 1:  # an older run, or vLLM unavailable for some stages: say it plainly
        scored = ", ".join(f"{name}: {engine or 'unknown'}" for name, engine in engines.items())
        w(f"\n**Warning: the rows were scored by different engines** ({scored}); differences between those rows "
          "include the engines' own. spec.evaluation.engine picks one for every row.\n")
    elif engines:
        w(f"\nEvery row scored by the {next(iter(engines.values())) or 'unknown'} engine (greedy).\n")
    kl_rows = [t for t in report["perTask"] if t.get("policyKl") or t.get("replayedPrompts") is not None]
    if kl_rows:  # the KL early warning (k3 on the task's own prompts, docs/design.md) and replay, per task
        w("\n| task | KL(base ‖ policy) end / max | KL(task start ‖ policy) end / max | replayed prompts |\n"
          "|---|---|---|---|\n")
        for t in kl_rows:
            kl = t.get("policyKl") or {}
            cell = lambda r: f"{r['last']:.4f} / {r['max']:.4f}" if r else "-"  # noqa: E731
            w(f"| {t['name']} | {cell(kl.get('base'))} | {cell(kl.get('taskStart'))} | "
              f"{_fmt(t.get('replayedPrompts'))} |\n")
    for t in report["perTask"]:
        if t.get("rifMode") == "online":
            w(f"\nTask {t['name']!r}: online RIF skipped {t['skippedGroups']} group(s) in later epochs, "
              f"{t['rolloutsSaved']} rollouts fewer than GRPO's; kept/dropped by each prompt's latest group.\n")
    for t in report["perTask"]:
        if t.get("trainResumes"):
            w(f"\nTask {t['name']!r}: train resumed at step {t['resumedAtStep']} of {t['learnerSteps']} "
              f"({t['trainResumes']} resume(s) from step checkpoints).\n")
    for t in report["perTask"]:
        if t.get("noSignal"):
            w(f"\n**Warning: task {t['name']!r} taught the model nothing**: {t['noSignal']}.\n")
    totals = report["totals"]
    w(f"\nTotal: {totals['rolloutTokens']} rollout tokens, {totals['learnerSteps']} learner steps, "
      f"{totals['seconds']} s in stages.\n")
    return out.getvalue()


def heatmap_png(report: dict) -> Optional[bytes]:
    """The accuracy matrix as a PNG heatmap (None if matplotlib is not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels = [BASE_TASK_NAME] + report["tasks"]
    rows = report["matrix"]
    data = [[float("nan") if v is None else v for v in row] for row in rows] or [[float("nan")] * len(report["tasks"])]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * max(len(report["tasks"]), 1), 1.0 + 0.6 * len(data)))
    image = ax.imshow(data, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(report["tasks"])), report["tasks"])
    ax.set_yticks(range(len(data)), ["base model"] + [f"after {labels[i]}" for i in range(1, len(data))])
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            if v is not None:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black")
    ax.set_title(f"accuracy matrix ({report['method']})")
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_report(store, report: dict) -> list[str]:
    """Store report.json, report.md and accuracy.png at the run's storage root; returns the keys written."""
    keys = ["report.json", "report.md"]
    store.put_bytes("report.json", json.dumps(report, indent=2).encode())
    store.put_bytes("report.md", render_markdown(report).encode())
    png = heatmap_png(report)
    if png is not None:
        store.put_bytes("accuracy.png", png)
        keys.append("accuracy.png")
    return keys
