"""cpt_trainer: tasks, rewards, rollout engines, RIF, GRPO/SFT learners, evaluation and storage.

Imports no kopf. Modules the operator uses (`storage`, `forgetting`) import no torch either.
"""

__version__ = "0.1.0"
