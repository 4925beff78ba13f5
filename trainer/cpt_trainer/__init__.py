"""cpt_trainer: the stages of a task (RIF filter, GRPO/SFT train, evaluate), rollout engines, the tiny model.

Imports cpt_core (spec, stage contract, tasks, storage), never kopf, Kubernetes or cpt_operator.
"""

__version__ = "0.1.0"
