#!/bin/bash
# This session's execution order for protocol v3 and the pilot (PROTOCOL-v3.md, execution note of 2026-11-30),
# one run at a time under nice, one thread. Resumable: every finished run is cached, so rerunning this script
# with the same snapshot continues where it stopped. Usage: bench/forgetting/queue-v3.sh SNAPSHOT [WAIT_PID]
set -u
cd "$(dirname "$0")/../.."
SNAP=${1:?usage: queue-v3.sh SNAPSHOT [PID to wait for]}
if [ -n "${2:-}" ]; then while kill -0 "$2" 2>/dev/null; do sleep 20; done; fi
export OMP_NUM_THREADS=1
step() { echo "=== $(date -u +%H:%M:%S) $*"; nice -n 10 .venv/bin/python bench/forgetting/run.py "$@" --snapshot "$SNAP" \
         || echo "=== $(date -u +%H:%M:%S) step failed (exit $?): $*"; }
step --protocol v3 --phase bases
step --protocol v3 --phase admission
step --protocol pilot --phase import,admission
step --protocol v3 --phase pairs --pairs 1
step --protocol pilot --phase arms
step --protocol v3 --phase pairs
echo "=== $(date -u +%H:%M:%S) queue finished"
