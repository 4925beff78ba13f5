"""Real vLLM rollout servers for the tests that need them (tests/vllm_server, the vllm-marked bench tests)."""

TOKEN = "test-run-token"  # the servers' key (vLLM's /v1 and the weight-sync routes); learners send it from the env


def start_servers(model, log_dir, replicas=1):
    from cpt_operator.local.rollout_server import RolloutServers

    return RolloutServers(model, log_dir, replicas=replicas, token=TOKEN).start()


def worker_cpus(server_pid: int) -> set[int]:
    """The CPUs the process that runs the model under `server_pid` may run on. A local server runs its worker inside
    vLLM's engine core (rollout_server.server_env), so there must be one VLLM::EngineCore and no VLLM::Worker."""
    import os
    from pathlib import Path

    todo, names = [server_pid], {}
    while todo:
        pid = todo.pop()
        names[pid] = Path(f"/proc/{pid}/comm").read_text().strip()  # the kernel keeps 15 characters
        for task in Path(f"/proc/{pid}/task").iterdir():
            todo += [int(c) for c in (task / "children").read_text().split()]
    cores = [p for p, name in names.items() if name.startswith("VLLM::EngineCor")]
    assert len(cores) == 1 and "VLLM::Worker" not in names.values(), f"processes under {server_pid}: {names}"
    return os.sched_getaffinity(cores[0])
