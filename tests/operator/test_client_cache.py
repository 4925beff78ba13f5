"""The S3 client cache: clients share one parsed botocore model (cpt_core.storage.s3client), so 100 distinct
endpoints are all kept (none rebuilt every resync) for a few tens of MB; a full cache evicts the least recently
used client and closes it (figure printed; bench/storage_endpoints measures the whole operator)."""

from __future__ import annotations

import gc
import os

from cpt_core.storage import Credentials, open_store
from cpt_operator.kube.controller.storage_access import MAX_CLIENTS, READ_TIMEOUTS, ClientCache


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Closing:
    """A real S3 client that records that it was closed."""

    closed = 0

    def __init__(self, endpoint: str) -> None:
        self.client = open_store("s3://bucket/run", endpoint=endpoint, region="us-east-1", timeouts=READ_TIMEOUTS,
                                 credentials=Credentials("AKIACLIENTCACHE00026", "client-cache-secret-26")).client

    def close(self) -> None:
        Closing.closed += 1
        self.client.close()


def test_a_hundred_endpoints_are_all_kept_in_bounded_memory(capsys):
    cache = ClientCache()
    for i in range(3):  # warm botocore's shared model first: it is paid once per process
        cache.get(("warm", i), lambda i=i: Closing(f"http://127.0.0.{i + 1}:9000"))
    gc.collect()
    before = _rss_mb()
    for i in range(100):
        key = (f"http://10.0.{i}.1:9000", "us-east-1", True, "fp")
        client = cache.get(key, lambda i=i: Closing(f"http://10.0.{i}.1:9000"))
        assert cache.get(key, lambda: None) is client  # a hit
    gc.collect()
    grown = _rss_mb() - before
    assert len(cache) == 103 <= MAX_CLIENTS and cache.evicted == 0 and Closing.closed == 0
    with capsys.disabled():
        print(f"\n[client cache] 100 endpoints: {len(cache)} clients kept, none rebuilt, RSS +{grown:.0f} MB")
    assert grown < 60, grown
    cache.close()
    assert len(cache) == 0 and Closing.closed == 103


def test_a_full_cache_evicts_and_closes_the_least_recently_used():
    Closing.closed = 0
    cache = ClientCache(size=4)
    for i in range(6):
        cache.get(("ep", i), lambda i=i: Closing(f"http://10.1.{i}.1:9000"))
    assert len(cache) == 4 and cache.evicted == 2 and Closing.closed == 2
    cache.close()
