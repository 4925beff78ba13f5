"""Fixtures: a real S3 HTTP server (moto, threaded, 127.0.0.1) for the session; a store per test on each
backend; a fault-injecting proxy in front of moto (the helper modules are in tests/support, on pytest's
pythonpath)."""

from __future__ import annotations

from typing import Iterator

import pytest
import storage_faultproxy as faultproxy
import storage_testlib as testlib

from cpt_core.storage import Store, open_store


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
