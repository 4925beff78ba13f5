"""cpt_operator: the ContinualPostTraining API, the pure planner, and the executors (Kubernetes, local).

Never imports torch. Only `handlers` imports kopf; only `kube` talks to the Kubernetes API.
"""

__version__ = "0.1.0"
