"""cpt_operator: the pure planner and the two executors (Kubernetes, local processes), metrics and the `cpt` CLI.

Imports cpt_core, never cpt_trainer, never torch. Only `kube.kopf_adapter` imports kopf; only `kube.rest` talks to
the Kubernetes API (checked by the import-linter contracts in pyproject.toml).
"""

__version__ = "0.1.0"
