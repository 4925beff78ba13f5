"""The S3 client cache is bounded: 100 distinct endpoints (or Secret rotations) keep at most 16 clients, the
evicted ones closed, and the process's memory bounded (figure printed; ~12 MB per client unbounded)."""

from __future__ import annotations

import gc
import os

from cpt_core.storage import open_store
from cpt_operator.kube.storage_access import MAX_CLIENTS, ClientCache


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Closing:
    """A real boto3 client that records that it was closed."""

    closed = 0

    def __init__(self, endpoint: str) -> None:
        self.client = open_store("s3://bucket/run", endpoint=endpoint, region="us-east-1").client

    def close(self) -> None:
        Closing.closed += 1
        self.client.close()


def test_a_hundred_endpoints_keep_sixteen_clients_and_bounded_memory(capsys):
    cache = ClientCache()
    for i in range(3):  # warm botocore's model caches first: they are shared and paid once
        cache.get(("warm", i), lambda i=i: Closing(f"http://127.0.0.{i + 1}:9000"))
    gc.collect()
    before = _rss_mb()
    for i in range(100):
        client = cache.get((f"http://10.0.{i}.1:9000", "us-east-1", True, "fp"),
                           lambda i=i: Closing(f"http://10.0.{i}.1:9000"))
        assert cache.get((f"http://10.0.{i}.1:9000", "us-east-1", True, "fp"), lambda: None) is client  # a hit
    gc.collect()
    grown = _rss_mb() - before
    assert len(cache) == MAX_CLIENTS and cache.evicted == 100 + 3 - MAX_CLIENTS
    assert Closing.closed == cache.evicted
    with capsys.disabled():
        print(f"\n[client cache] 100 endpoints: {len(cache)} clients kept, {cache.evicted} evicted and closed, "
              f"RSS +{grown:.0f} MB (bound {MAX_CLIENTS} x ~12 MB)")
    assert grown < 16 * 14 + 60, grown
    cache.close()
    assert len(cache) == 0
