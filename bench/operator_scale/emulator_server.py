"""The strict emulated API server (tests/support/kubeemu over kmock 0.8) in a process of its own, for the benchmark.

    python bench/operator_scale/emulator_server.py KUBECONFIG_DIR
      -> prints the kubeconfig path on its first stdout line, then answers line commands on stdin:
         count            -> JSON {plural: creates so far}
         creates          -> JSON [[plural, namespace, name, uid, t_monotonic], ...] of every create
         requests         -> JSON {"METHOD plural[/sub]": n} of every request served
         quit (or EOF)    -> stop

Create times are this process's time.monotonic() at the moment the object was stored; on Linux that clock is
system-wide, so the benchmark compares them with its own. A separate process keeps the server's CPU apart
from the operator's and the benchmark's.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "support"))

from kubeemu import EmulatorThread  # noqa: E402
from kubeemu import semantics as sem  # noqa: E402


class TimedCreates(list):
    """Stats.creates, with each entry stamped on append (the emulator appends right after storing), and
    counted by plural as it goes (the benchmark polls the counts: that must not cost the server a scan)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def append(self, item: tuple) -> None:  # (plural, namespace, name, uid)
        super().append((*item, time.monotonic()))
        self.counts[item[0]] += 1


def request_counts(emu) -> dict[str, int]:
    """kmock logs every request it served: count them by verb and resource."""
    counts: collections.Counter = collections.Counter()
    for request in emu._requests:
        path = sem.parse_path(request.url.path)
        if path is None:
            continue
        method = str(getattr(request.method, "value", request.method)).upper()
        if method == "GET" and str(request.params.get("watch", "")).lower() in ("true", "1"):
            method = "WATCH"
        elif method == "GET":
            method = "GET" if path.name else "LIST"
        counts[f"{method} {path.plural}{'/' + path.subresource if path.subresource else ''}"] += 1
    return dict(counts)


def main() -> int:
    crd = yaml.safe_load((REPO / "crds" / "continualposttraining.yaml").read_text())
    with EmulatorThread(crds=[crd]) as emu:
        emu.call(lambda e: setattr(e.stats, "creates", TimedCreates()))
        print(emu.kubeconfig(sys.argv[1]), flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "count":
                out = emu.call(lambda e: dict(e.stats.creates.counts))
            elif cmd == "creates":
                out = emu.call(lambda e: [list(c) for c in e.stats.creates])
            elif cmd == "requests":
                out = emu.call(request_counts)
            elif cmd == "quit":
                break
            else:
                out = {"error": f"unknown command {cmd!r}"}
            print(json.dumps(out), flush=True)
        sys.stdout.flush()
        os._exit(0)  # no graceful stop: with thousands of objects and open watches it takes longer than it tells
    return 0


if __name__ == "__main__":
    sys.exit(main())
