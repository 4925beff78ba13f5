"""Builds the cpt-operator Grafana dashboard with grafana-foundation-sdk and writes charts/cpt-operator/files/dashboard.json.

    .venv/bin/python observability/dashboard.py          # regenerate the committed JSON
    .venv/bin/python observability/dashboard.py --check  # exit 1 if the committed JSON is stale

Why a builder instead of hand-edited JSON: typed builders catch misspelled options, queries live next to the
panel they feed, and a test (tests/observability/test_dashboard.py) checks the committed file is this output, that
every query is valid PromQL (promtool) and that it only selects metrics the exporter serves.

Queries aggregate with `max by (...)` down to the labels the panel shows, so that scrape labels (job, instance,
pod, ...) and a second operator pod during a rolling update do not split a matrix cell. The dashboard uses only
raw exporter metrics (no recording rules), so it works where the rules are not loaded.

Ordering: matrix rows follow `after_index` (0 = base model, then task order) via convert + sort transformations
before `groupingToMatrix`, which keeps first-seen order.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, barchart, dashboard, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig, ReduceDataOptions, VizLegendOptions
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = Path(__file__).resolve().parents[1] / "charts/cpt-operator/files/dashboard.json"
UID = "cpt-operator-forgetting"
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'namespace=~"$namespace", cpt=~"$cpt"'
RUN = 'namespace=~"$namespace", cpt="$cpt"'  # inside panels repeated per run
STUCK_SECONDS = 12 * 3600  # keep in step with CptRunStuckInStage in prometheus-rules.yaml


# ----------------------------------------------------------------------------------------------- helpers

def query(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> Dataquery:
    q = Dataquery().expr(expr).ref_id(ref).legend_format(legend or "__auto").datasource(DS)
    return q.instant().format(PromQueryFormat.TABLE) if instant else q.range()


def transform(id_val: str, options: dict) -> dm.DataTransformerConfig:
    return dm.DataTransformerConfig(id_val=id_val, options=options)


def sort_rows(field: str = "after_index") -> list[dm.DataTransformerConfig]:
    """Sort table rows numerically by a label (labels arrive as strings)."""
    return [
        transform("convertFieldType", {"conversions": [{"targetField": field, "destinationType": "number"}],
                                       "fields": {}}),
        transform("sortBy", {"fields": {}, "sort": [{"field": field, "desc": False}]}),
    ]


def matrix(column: str) -> list[dm.DataTransformerConfig]:
    """Instant table of (after_index, after_task, <column>, Value) -> rows after_task x columns <column>."""
    return sort_rows() + [transform("groupingToMatrix", {"columnField": column, "rowField": "after_task",
                                                         "valueField": "Value"})]


def legend(mode=common.LegendDisplayMode.LIST) -> VizLegendOptions:
    return VizLegendOptions().show_legend(True).display_mode(mode).placement(common.LegendPlacement.BOTTOM)


def matrix_table(title: str, expr: str, column: str, description: str) -> table.Panel:
    """A matrix as a colour-coded table (Grafana's heatmap panel wants time buckets, not a matrix)."""
    return (table.Panel().title(title).show_header(True).description(description).datasource(DS).repeat("cpt")
            .repeat_direction("h").height(8).span(12)
            .with_target(query(expr, instant=True)).transformations(matrix(column))
            .unit("percentunit").min(0).max(1).decimals(2)
            .color_scheme(dashboard.FieldColor().mode(dm.FieldColorModeId.CONTINUOUS_RD_YL_GR))
            .override_by_field_type("number", [dm.DynamicConfigValue(
                id_val="custom.cellOptions", value={"type": "color-background", "mode": "gradient"})]))


# ----------------------------------------------------------------------------------------------- panels

def overview() -> list:
    return [
        stat.Panel().title("Phase").datasource(DS).height(4).span(6)
        .with_target(query(f"max by (namespace, cpt, phase) (cpt_run_phase{{{SEL}}}) == 1", "{{cpt}}: {{phase}}"))
        .text_mode(common.BigValueTextMode.NAME).color_mode(common.BigValueColorMode.NONE)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"])),
        stat.Panel().title("Progress").description("Tasks trained and evaluated / tasks in the spec.")
        .datasource(DS).height(4).span(6).unit("percentunit").min(0).max(1)
        .with_target(query(f"max by (namespace, cpt) (cpt_run_completed_tasks{{{SEL}}})"
                           f" / max by (namespace, cpt) (cpt_run_total_tasks{{{SEL}}} > 0)", "{{cpt}}"))
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"])),
        stat.Panel().title("AA / BWT / forgetting / plasticity (latest task)").datasource(DS).height(4).span(6)
        .decimals(3)
        .with_target(query(f"max by (namespace, cpt) (cpt_average_accuracy{{{SEL}}})", "{{cpt}} AA", "A"))
        .with_target(query(f"max by (namespace, cpt) (cpt_backward_transfer{{{SEL}}})", "{{cpt}} BWT", "B"))
        .with_target(query(f"max by (namespace, cpt) (cpt_forgetting{{{SEL}}})", "{{cpt}} forgetting", "C"))
        .with_target(query(f"max by (namespace, cpt) (cpt_plasticity{{{SEL}}})", "{{cpt}} plasticity", "D"))
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"])),
        stat.Panel().title("Worst task drop beyond maxDrop")
        .description("max over tasks of (best accuracy - latest) minus spec.forgetting.maxDrop; "
                     "above 0 the CptForgettingRegression alert fires.")
        .datasource(DS).height(4).span(6).unit("percentunit").decimals(1)
        .with_target(query(f"max by (namespace, cpt) (cpt_task_accuracy_drop{{{SEL}}})"
                           f" - on (namespace, cpt) max by (namespace, cpt) (cpt_forgetting_max_drop{{{SEL}}})",
                           "{{cpt}}"))
        .thresholds(dashboard.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
            [dm.Threshold(value=None, color="green"), dm.Threshold(value=0, color="red")]))
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"])),
    ]


def accuracy() -> list:
    per_row = [("cpt_average_accuracy_after_task", "AA", "A"), ("cpt_backward_transfer_after_task", "BWT", "B"),
               ("cpt_forgetting_after_task", "forgetting", "C")]
    summary = (barchart.Panel().title("AA / BWT / forgetting after each task ($cpt)").datasource(DS)
               .repeat("cpt").repeat_direction("h").height(8).span(12).x_field("after_task").decimals(3)
               .legend(legend()))
    for metric, name, ref in per_row:
        summary = summary.with_target(query(f"max by (after_task, after_index) ({metric}{{{RUN}}})", name, ref,
                                            instant=True))
    summary = summary.transformations(
        [transform("merge", {})] + sort_rows()
        + [transform("organize", {"excludeByName": {"Time": True, "after_index": True},
                                  "renameByName": {f"Value #{ref}": name for _, name, ref in per_row}})])
    return [
        matrix_table("Accuracy matrix ($cpt)",
                     f"max by (task, after_task, after_index) (cpt_task_accuracy{{{RUN}}})", "task",
                     "a[i][j]: accuracy on task j (columns) after training task i (rows; base = before training)."),
        summary,
        barchart.Panel().title("Per-task accuracy after each task ($cpt)")
        .description("Each task's accuracy curve over the training sequence (grouped by the task just trained).")
        .datasource(DS).repeat("cpt").repeat_direction("h").height(8).span(12).x_field("after_task\\task")
        .unit("percentunit").min(0).max(1).legend(legend())
        .with_target(query(f"max by (task, after_task, after_index) (cpt_task_accuracy{{{RUN}}})", instant=True))
        .transformations(matrix("task")),
        timeseries.Panel().title("Latest accuracy of each task").datasource(DS).height(8).span(12)
        .unit("percentunit").min(0).max(1).legend(legend())
        .with_target(query(f"max by (namespace, cpt, task) (cpt_task_best_accuracy{{{SEL}}})"
                           f" - max by (namespace, cpt, task) (cpt_task_accuracy_drop{{{SEL}}})", "{{cpt}} {{task}}")),
        timeseries.Panel().title("AA / BWT / forgetting over time").datasource(DS).height(8).span(12).decimals(3)
        .legend(legend())
        .with_target(query(f"max by (namespace, cpt) (cpt_average_accuracy{{{SEL}}})", "{{cpt}} AA", "A"))
        .with_target(query(f"max by (namespace, cpt) (cpt_backward_transfer{{{SEL}}})", "{{cpt}} BWT", "B"))
        .with_target(query(f"max by (namespace, cpt) (cpt_forgetting{{{SEL}}})", "{{cpt}} forgetting", "C")),
        timeseries.Panel().title("Task drop below its best vs maxDrop").datasource(DS).height(8).span(12)
        .unit("percentunit").legend(legend())
        .with_target(query(f"max by (namespace, cpt, task) (cpt_task_accuracy_drop{{{SEL}}})", "{{cpt}} {{task}}", "A"))
        .with_target(query(f"max by (namespace, cpt) (cpt_forgetting_max_drop{{{SEL}}})", "{{cpt}} maxDrop", "B")),
        timeseries.Panel().title("Policy KL: early warning of forgetting").datasource(DS).height(8).span(24)
        .decimals(3).legend(legend())
        .description("KL(reference || policy) on the training task's own prompts (spec.forgetting.klEverySteps; "
                     "nats per completion): from the base model and from the task's start. It moves while the task "
                     "trains, before any evaluation; CptPolicyDrift fires when the base reference passes "
                     "prometheus.prometheusRule.policyKlThreshold (chart values).")
        .with_target(query(f"max by (namespace, cpt, task, reference) (cpt_policy_kl{{{SEL}}})",
                           "{{cpt}} {{task}} from {{reference}}", "A"))
        .with_target(query(f"max by (namespace, cpt, task, reference) (cpt_policy_kl_max{{{SEL}}})",
                           "{{cpt}} {{task}} max from {{reference}}", "B")),
    ]


def general() -> list:
    return [
        matrix_table("General benchmarks after each task ($cpt)",
                     f"max by (benchmark, after_task, after_index) (cpt_general_score{{{RUN}}})", "benchmark",
                     "Score of each general benchmark (columns) after each task (rows; base = before training)."),
        timeseries.Panel().title("General score drop from the base model").datasource(DS).height(8).span(12)
        .unit("percentunit").legend(legend())
        .with_target(query(f"max by (namespace, cpt, benchmark) (cpt_general_score_drop{{{SEL}}})", "{{cpt}} {{benchmark}}",
                           "A"))
        .with_target(query(f"max by (namespace, cpt) (cpt_forgetting_max_drop{{{SEL}}})", "{{cpt}} maxDrop", "B")),
    ]


def rif() -> list:
    return [
        bargauge.Panel().title("RIF filtered fraction per task")
        .description("Share of each task's training prompts that RIF dropped (never solved in N rollouts).")
        .datasource(DS).height(8).span(8).unit("percentunit").min(0).max(1)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT).orientation(common.VizOrientation.HORIZONTAL)
        .with_target(query(f"max by (namespace, cpt, task) (cpt_rif_filtered_fraction{{{SEL}}})", "{{cpt}} {{task}}",
                           instant=True)),
        barchart.Panel().title("RIF kept / dropped prompts ($cpt)").datasource(DS).repeat("cpt")
        .repeat_direction("h").height(8).span(8).x_field("task").stacking(common.StackingMode.NORMAL).legend(legend())
        .with_target(query(f"max by (task) (cpt_rif_kept{{{RUN}}})", "kept", "A", instant=True))
        .with_target(query(f"max by (task) (cpt_rif_dropped{{{RUN}}})", "dropped", "B", instant=True))
        .transformations([transform("merge", {}), transform("organize", {
            "excludeByName": {"Time": True}, "renameByName": {"Value #A": "kept", "Value #B": "dropped"}})]),
        table.Panel().title("Compute per task").show_header(True).datasource(DS).height(8).span(8)
        .with_target(query(f"max by (namespace, cpt, task) (cpt_rollout_tokens{{{SEL}}})", ref="A", instant=True))
        .with_target(query(f"max by (namespace, cpt, task) (cpt_learner_steps{{{SEL}}})", ref="B", instant=True))
        .with_target(query(f"sum by (namespace, cpt, task) (max by (namespace, cpt, task, stage) (cpt_stage_duration_seconds{{{SEL}}}))",
                           ref="C", instant=True))
        .with_target(query(f"max by (namespace, cpt, task) (cpt_train_resumed_total{{{SEL}}})", ref="D", instant=True))
        .with_target(query(f"max by (namespace, cpt, task) (cpt_rif_skipped_groups{{{SEL}}})", ref="E", instant=True))
        .with_target(query(f"max by (namespace, cpt, task) (cpt_rif_rollouts_saved{{{SEL}}})", ref="F", instant=True))
        .transformations([transform("merge", {}), transform("organize", {
            "excludeByName": {"Time": True},
            "renameByName": {"Value #A": "rollout tokens", "Value #B": "learner steps",
                             "Value #C": "stage seconds", "Value #D": "train resumes",
                             "Value #E": "online RIF skipped groups", "Value #F": "rollouts saved"}})])
        .override_by_name("stage seconds", [dm.DynamicConfigValue(id_val="unit", value="s")]),
    ]


def stages() -> list:
    code = " + ".join(f"{n} * max by (namespace, cpt, task) (cpt_task_active_stage{{{SEL}, stage=\"{s}\"}})"
                      for n, s in ((1, "filter"), (2, "train"), (3, "evaluate")))
    names = {"0": ("idle", "transparent"), "1": ("filter", "purple"), "2": ("train", "blue"),
             "3": ("evaluate", "green")}
    return [
        statetimeline.Panel().title("Stage timeline").description("Which stage each task is in over time.")
        .datasource(DS).height(8).span(16).show_value(common.VisibilityMode.NEVER).legend(legend())
        .with_target(query(code, "{{cpt}} {{task}}"))
        .mappings([dm.ValueMap(options={k: dm.ValueMappingResult(text=t, color=c, index=int(k))
                                        for k, (t, c) in names.items()})]),
        timeseries.Panel().title("Time in the current stage").datasource(DS).height(8).span(8).unit("s")
        .legend(legend())
        .with_target(query(f"time() - max by (namespace, cpt, task, stage) (cpt_stage_started_timestamp_seconds{{{SEL}}})",
                           "{{cpt}} {{task}} {{stage}}"))
        .thresholds(dashboard.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
            [dm.Threshold(value=None, color="green"), dm.Threshold(value=STUCK_SECONDS, color="red")]))
        .thresholds_style(GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)),
        table.Panel().title("Stage attempts").show_header(True).datasource(DS).height(6).span(12)
        .with_target(query(f"max by (namespace, cpt, task, stage) (cpt_stage_attempts{{{SEL}}}) > 1", instant=True))
        .transformations([transform("organize", {"excludeByName": {"Time": True},
                                                 "renameByName": {"Value": "attempts"}})]),
        table.Panel().title("Conditions").show_header(True).datasource(DS).height(6).span(12)
        .description("Status conditions of each run (1 = True): StorageReachable / StorageIntact = 0 means the "
                     "operator cannot read the run's storage or a committed task is damaged; Queued = 1 while a "
                     "stage waits for admission by its Kueue queue.")
        .with_target(query(f"max by (namespace, cpt, condition) (cpt_run_condition{{{SEL}}})", instant=True))
        .transformations([transform("organize", {"excludeByName": {"Time": True},
                                                 "renameByName": {"Value": "true"}})]),
    ]


def fleet() -> list:
    return [
        timeseries.Panel().title("Rollout policy version per replica").datasource(DS).height(7).span(24)
        .description("Learner step whose weights each vLLM rollout replica serves, as the train stage read it after "
                     "each weight sync (-1: down or holding another policy), with the learner's own step. A "
                     "restarted replica drops to -1 until the learner re-syncs it (docs/checkpoints.md).")
        .legend(legend())
        .with_target(query(f"max by (namespace, cpt, task, replica) (cpt_rollout_policy_version{{{SEL}}})",
                           "{{cpt}} {{task}} replica {{replica}}", "A"))
        .with_target(query(f"max by (namespace, cpt, task) (cpt_rollout_learner_step{{{SEL}}})",
                           "{{cpt}} {{task}} learner", "B")),
    ]


def operator() -> list:
    rate = "$__rate_interval"
    return [
        timeseries.Panel().title("Reconciles / s").datasource(DS).height(6).span(12).unit("ops").legend(legend())
        .with_target(query(f"sum(rate(cpt_operator_reconcile_total[{rate}]))", "reconciles", "A"))
        .with_target(query(f"sum(rate(cpt_operator_reconcile_errors_total[{rate}]))", "errors", "B")),
        timeseries.Panel().title("Reconcile latency").datasource(DS).height(6).span(12).unit("s").legend(legend())
        .with_target(query("histogram_quantile(0.95, sum by (le) "
                           f"(rate(cpt_operator_reconcile_duration_seconds_bucket[{rate}])))", "p95", "A"))
        .with_target(query("histogram_quantile(0.5, sum by (le) "
                           f"(rate(cpt_operator_reconcile_duration_seconds_bucket[{rate}])))", "p50", "B")),
    ]


# ----------------------------------------------------------------------------------------------- dashboard

def variables() -> list:
    def label_values(name: str, expr: str, multi: bool) -> dashboard.QueryVariable:
        return (dashboard.QueryVariable(name).label(name).datasource(DS)
                .query({"query": expr, "refId": "PrometheusVariableQueryEditor-VariableQuery"})
                .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
                .multi(multi).include_all(True))

    return [
        dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"),
        label_values("namespace", "label_values(cpt_run_info, namespace)", multi=True),
        label_values("cpt", 'label_values(cpt_run_info{namespace=~"$namespace"}, cpt)', multi=True),
    ]


def build() -> dashboard.Dashboard:
    board = (dashboard.Dashboard("CPT: continual post-training").uid(UID)
             .description("Forgetting, accuracy matrix, general capability, RIF filtering and stages of "
                          "ContinualPostTraining runs (cpt-operator). Metrics: docs/metrics.md.")
             .tags(["cpt-operator", "training"]).time("now-24h", "now").refresh("1m").timezone("browser")
             .tooltip(dm.DashboardCursorSync.CROSSHAIR).editable().variables(variables()))
    next_id = 1
    for title, panels in [("Overview", overview()), ("Accuracy and forgetting", accuracy()),
                          ("General capability", general()), ("RIF filtering and compute", rif()),
                          ("Stages", stages()), ("Rollout fleet", fleet()), ("Operator", operator())]:
        board = board.with_row(dashboard.Row(title).id(next_id))
        for n, panel in enumerate(panels, start=next_id + 1):
            board = board.with_panel(panel.id(n))
        next_id += len(panels) + 1
    return board


def render() -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(build().build()) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        fresh = OUTPUT.exists() and json.loads(OUTPUT.read_text()) == json.loads(text)
        print("up to date" if fresh else f"{OUTPUT} is stale: run observability/dashboard.py")
        return 0 if fresh else 1
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
