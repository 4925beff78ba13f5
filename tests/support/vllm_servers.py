"""Real vLLM rollout servers for the tests that need them (tests/vllm_server, the vllm-marked bench tests)."""

TOKEN = "test-run-token"  # the servers' key (vLLM's /v1 and the weight-sync routes); learners send it from the env


def start_servers(model, log_dir, replicas=1):
    from cpt_operator.local.rollout_server import RolloutServers

    return RolloutServers(model, log_dir, replicas=replicas, token=TOKEN).start()
