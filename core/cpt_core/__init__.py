"""cpt_core: the contract that the operator and the trainer both import and neither owns.

The ContinualPostTraining models and their validation, the stage contract (stage config, the stage-process line
protocol, exit codes), tasks and rewards, the storage layout and backends with the manifest commit, and the
forgetting metrics. Imports neither `cpt_operator` nor `cpt_trainer`, no kopf or Kubernetes client, no torch.
"""

__version__ = "0.1.0"
