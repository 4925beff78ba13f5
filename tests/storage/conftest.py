"""Fixtures: a real S3 HTTP server (moto, threaded, 127.0.0.1) for the session; a store per test on each
backend; a fault-injecting proxy in front of moto. Helper modules are registered under unique names because
pytest runs with --import-mode=importlib (test files cannot import their neighbours directly)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest


def _load(name: str, file: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(file))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


faultproxy = _load("storage_faultproxy", "faultproxy.py")
testlib = _load("storage_testlib", "testlib.py")

from cpt_core.storage import Store, open_store  # noqa: E402


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The same tests on both backends."""
    if request.param == "local":
        st = open_store(str(tmp_path / "store"))
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        st = testlib.s3_store(endpoint, testlib.new_bucket(endpoint))
    yield st
    st.close()


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[Any]:
    host, port = moto_endpoint.removeprefix("http://").split(":")
    p = faultproxy.FaultProxy((host, int(port)))
    yield p
    p.close()


@pytest.fixture
def ckpt(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    src = tmp_path / "ckpt"
    return src, testlib.make_checkpoint(src)
