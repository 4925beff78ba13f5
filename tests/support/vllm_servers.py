"""Real vLLM rollout servers for the tests that need them (tests/vllm_server, the vllm-marked bench tests)."""

TOKEN = "test-run-token"  # the servers' key (vLLM's /v1 and the weight-sync routes); learners send it from the env


def start_servers(model, log_dir, replicas=1):
    from cpt_operator.local.rollout_server import RolloutServers

    return RolloutServers(model, log_dir, replicas=replicas, token=TOKEN).start()


def worker_cpus(server_pid: int) -> set[int]:
    """The CPUs the vLLM worker process under `server_pid` (its VLLM::Worker descendant) may run on."""
    import os
    from pathlib import Path

    todo, seen = [server_pid], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        for task in Path(f"/proc/{pid}/task").iterdir():
            todo += [int(c) for c in (task / "children").read_text().split()]
    workers = [p for p in seen if Path(f"/proc/{p}/comm").read_text().strip() == "VLLM::Worker"]
    assert len(workers) == 1, f"expected one VLLM::Worker under {server_pid}, found {workers}"
    return os.sched_getaffinity(workers[0])
