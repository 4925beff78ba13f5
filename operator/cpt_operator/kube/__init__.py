"""The Kubernetes executor: kopf handlers (the only kopf import), the API client, what a pass observes,
children rendered from the planner's intents (pure manifests), events, permissions and settings."""
