"""Serve the strict emulator on 127.0.0.1 from its own thread and event loop, for synchronous tests.

Why a thread: the operator runs under kopf's KopfRunner in another thread with its own loop, kubectl runs as a
subprocess, and the tests talk to the API with the synchronous kubernetes client. The emulator's state is only
touched from its own loop (`call()` hops there), so no locking is needed anywhere else.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any, Callable, Optional

import kmock
import yaml

from .emulator import Fault, StrictEmulator

# (group/version, plural, kind, namespaced, status subresource, short names)
RESOURCES = [
    ("v1", "namespaces", "Namespace", False, True, ("ns",)),
    ("v1", "events", "Event", True, False, ("ev",)),
    ("v1", "configmaps", "ConfigMap", True, False, ("cm",)),
    ("v1", "services", "Service", True, True, ("svc",)),
    ("v1", "secrets", "Secret", True, False, ()),
    ("v1", "pods", "Pod", True, True, ("po",)),
    ("apps/v1", "deployments", "Deployment", True, True, ("deploy",)),
    ("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True, False, ("netpol",)),
    ("events.k8s.io/v1", "events", "Event", True, False, ()),
    ("apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition", False, True, ("crd",)),
    ("kubeflow.org/v1", "pytorchjobs", "PyTorchJob", True, True, ()),
    ("trainer.kubeflow.org/v1alpha1", "trainjobs", "TrainJob", True, True, ()),
    ("trainer.kubeflow.org/v1alpha1", "trainingruntimes", "TrainingRuntime", True, False, ()),
    ("workload.codeflare.dev/v1beta2", "appwrappers", "AppWrapper", True, True, ("aw",)),
    ("batch/v1", "jobs", "Job", True, True, ()),
    ("cpt.dev/v1alpha1", "continualposttrainings", "ContinualPostTraining", True, True, ("cpt",)),
]
NAMESPACES = ("default", "kube-system")


class EmulatorThread:
    """`with EmulatorThread() as emu:` -> emu.url, emu.kubeconfig(dir), emu.call(fn), emu.emulator."""

    def __init__(self, namespaces: tuple[str, ...] = NAMESPACES, crds: Optional[list[dict]] = None) -> None:
        self.namespaces = namespaces
        self.crds = crds or []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kube-emulator", daemon=True)
        self.emulator: Optional[StrictEmulator] = None
        self._server: Optional[kmock.Server] = None
        self.url = ""

    def __enter__(self) -> "EmulatorThread":
        self.thread.start()
        self._run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._run(self._stop(), timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    def _run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        emu = StrictEmulator()
        for gv, plural, kind, namespaced, status, short in RESOURCES:
            emu.declare(gv, plural, kind, namespaced=namespaced, status=status, shortnames=short)
        await emu.__aenter__()
        self._server = kmock.Server(emu, host="127.0.0.1")
        await self._server.__aenter__()
        self.emulator = emu
        self.url = str(self._server.url).rstrip("/")
        from .semantics import Path
        for ns in self.namespaces:
            emu._create(Path("", "v1", "namespaces"), emu.resources["v1/namespaces"],
                        {"metadata": {"name": ns}, "status": {"phase": "Active"}})
        for crd in self.crds:
            emu._create(Path("apiextensions.k8s.io", "v1", "customresourcedefinitions"),
                        emu.resources["apiextensions.k8s.io/v1/customresourcedefinitions"], crd)

    async def _stop(self) -> None:
        assert self.emulator is not None and self._server is not None
        self.emulator.drop_watches()
        await self._server.__aexit__(None, None, None)
        await self.emulator.__aexit__(None, None, None)

    # ------------------------------------------------------------------ test helpers
    def call(self, fn: Callable[[StrictEmulator], Any]) -> Any:
        """Run fn(emulator) in the emulator's loop (its state is not thread-safe) and return the result."""
        async def hop() -> Any:
            return fn(self.emulator)
        return self._run(hop())

    def live(self, plural: str, namespace: Optional[str] = None) -> list[dict]:
        return self.call(lambda e: e.live(plural, namespace))

    def creates(self, plural: Optional[str] = None) -> list[tuple]:
        return self.call(lambda e: [c for c in e.stats.creates if plural in (None, c[0])])

    def inject(self, *faults: Fault) -> None:
        self.call(lambda e: e.faults.extend(faults))

    def clear_faults(self) -> None:
        self.call(lambda e: e.faults.clear())

    def drop_watches(self) -> None:
        self.call(lambda e: e.drop_watches())

    def kubeconfig(self, directory: str) -> str:
        """Write a kubeconfig whose server is the emulator; returns its path."""
        path = os.path.join(directory, "kubeconfig")
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "tester",
                                                         "namespace": "default"}}],
        }
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(config, fh)
        return path
