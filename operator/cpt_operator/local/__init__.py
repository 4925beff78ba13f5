"""The local executor: `cpt run` drives the planner's stages as processes on this machine."""
