"""Fixtures: the API server (the strict emulator, or a real cluster), moto S3, and the operator under KopfRunner.

A real cluster: `CPT_REAL_CLUSTER=1 KUBECONFIG=... pytest -m cluster tests/operator` (a cluster with the CRDs
of cpt.dev and kubeflow.org installed and no training operator running: the tests play its part). Tests that
need the emulator's internals (fault injection, the log of creates) never run there.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import uuid
from pathlib import Path
from typing import Iterator

import kubernetes
import pytest
import yaml

from kubeemu import EmulatorThread  # noqa: E402

from operator_harness import World, api_client, running_operator  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "continualposttraining.yaml").read_text())
REAL = os.environ.get("CPT_REAL_CLUSTER") == "1" and bool(os.environ.get("KUBECONFIG"))
REAL_SKIP = ("real cluster not configured: set CPT_REAL_CLUSTER=1 and KUBECONFIG to a cluster with the "
             "cpt.dev and kubeflow.org CRDs (and no training operator) to run this against it")

OPERATOR_ENV = {
    "CPT_RECONCILE_INTERVAL": "0.5",
    "CPT_ERROR_BACKOFF": "0.1",
    "CPT_METRICS_PORT": "0",
    "CPT_WATCH_TIMEOUT": "20",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "CPT_NAMESPACES": "",
    # The tests' S3 (moto) listens on loopback: allowed as an admin allows an in-cluster MinIO (cpt_core.tenancy).
    "CPT_ALLOWED_INTERNAL_ENDPOINTS": "127.0.0.1",
}


@pytest.fixture(autouse=True)
def _loopback_storage_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here keeps its S3 (moto, or nothing at all) on 127.0.0.1, which a cluster's admin would have to
    allow (cpt_core.tenancy); tests/security checks the refusal itself."""
    monkeypatch.setenv("CPT_ALLOWED_INTERNAL_ENDPOINTS", OPERATOR_ENV["CPT_ALLOWED_INTERNAL_ENDPOINTS"])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorThread]:
    with EmulatorThread(crds=[CRD]) as emu:
        monkeypatch.setenv("KUBECONFIG", emu.kubeconfig(str(tmp_path)))
        yield emu


@pytest.fixture
def emulator_without(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`emulator_without("pytorchjobs")`: an emulator that does not serve those kinds (their CRD not installed),
    KUBECONFIG and the operator's environment set for it."""
    from kubeemu import runner as emu_runner

    with contextlib.ExitStack() as stack:
        def start(*plurals: str) -> EmulatorThread:
            monkeypatch.setattr(emu_runner, "RESOURCES", [r for r in emu_runner.RESOURCES if r[1] not in plurals])
            emu = stack.enter_context(EmulatorThread(crds=[CRD]))
            monkeypatch.setenv("KUBECONFIG", emu.kubeconfig(str(tmp_path)))
            for key, value in OPERATOR_ENV.items():
                monkeypatch.setenv(key, value)
            return emu

        yield start


@pytest.fixture(params=["emulator", pytest.param("cluster", marks=pytest.mark.cluster)])
def backend(request: pytest.FixtureRequest) -> EmulatorThread | None:
    """The same test on the emulator and (marker `cluster`) on a real cluster named by KUBECONFIG."""
    if request.param == "cluster":
        if not REAL:
            pytest.skip(REAL_SKIP)
        return None
    return request.getfixturevalue("emulator")


@pytest.fixture
def world(backend: EmulatorThread | None, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for key, value in OPERATOR_ENV.items():
        monkeypatch.setenv(key, value)
    client = api_client(os.environ["KUBECONFIG"])
    namespace = "default"
    if backend is None:  # a real cluster: one namespace per test, removed afterwards
        namespace = f"cpt-test-{uuid.uuid4().hex[:6]}"
        kubernetes.client.CoreV1Api(client).create_namespace({"metadata": {"name": namespace}})
    yield World(client, namespace, s3_endpoint)
    if backend is None:
        kubernetes.client.CoreV1Api(client).delete_namespace(namespace)
    client.close()


@pytest.fixture
def emu_world(emulator: EmulatorThread, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """Emulator-only tests (fault injection, create log)."""
    for key, value in OPERATOR_ENV.items():
        monkeypatch.setenv(key, value)
    client = api_client(os.environ["KUBECONFIG"])
    yield World(client, "default", s3_endpoint)
    client.close()


@pytest.fixture
def operator(world: World) -> Iterator[object]:
    with running_operator() as runner:
        yield runner


@pytest.fixture
def emu_operator(emu_world: World) -> Iterator[object]:
    with running_operator() as runner:
        yield runner


@pytest.fixture
def s3_proxy(s3_endpoint: str) -> Iterator[object]:
    """A TCP proxy in front of moto that can stop answering (tests/support/storage_faultproxy.py): a real outage."""
    from storage_faultproxy import FaultProxy

    host, port = s3_endpoint.removeprefix("http://").split(":")
    proxy = FaultProxy((host, int(port)))
    yield proxy
    proxy.close()


def thread_count() -> int:
    return threading.active_count()
