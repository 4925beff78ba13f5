"""The pure planner: (resource, observed world) -> intents, status and events. No I/O, no Kubernetes.

    plan(resource, Observed(now=..., jobs=..., committed=...)) -> Plan(start, rollout, suspend, status, events)
"""

from cpt_operator.planner.intents import Plan, PlanEvent, RolloutServers, SetSuspended, StartStage
from cpt_operator.planner.observed import Observed, ObservedJob
from cpt_operator.planner.plan import plan
from cpt_operator.planner.position import COMMIT_GRACE_SECONDS, task_names, task_spec_hash
from cpt_operator.planner.verdict import ACK_REGRESSION_ANNOTATION

__all__ = ["plan", "Plan", "PlanEvent", "StartStage", "RolloutServers", "SetSuspended", "Observed", "ObservedJob",
           "ACK_REGRESSION_ANNOTATION", "COMMIT_GRACE_SECONDS", "task_names", "task_spec_hash"]
