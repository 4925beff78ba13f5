"""storage.allowedEndpoints: the chart passes the globs to the operator as CPT_STORAGE_ENDPOINTS, which its
settings read back; an entry that is not a bare http(s) origin is refused by the schema."""

from __future__ import annotations

import pytest
from chart_common import NAMESPACE, helm

from cpt_operator.kube.settings import Settings


def _env(objects: list[dict]) -> dict[str, str]:
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"] if "value" in e}


def test_allowed_endpoints_reach_the_operator(render):
    allowed = ["https://minio.storage.svc:9000", "https://s3.*.amazonaws.com"]
    env = _env(render({"storage": {"allowedEndpoints": allowed}}))
    assert env["CPT_STORAGE_ENDPOINTS"] == ",".join(allowed)
    assert Settings.from_env({**env, "CPT_CHILD_KEY": "k" * 32}).storage_endpoints == tuple(allowed)
    assert _env(render())["CPT_STORAGE_ENDPOINTS"] == ""  # default: any endpoint


@pytest.mark.parametrize("bad", ["minio:9000", "https://minio:9000/path", "https://a,https://b", ""])
def test_an_entry_that_is_not_an_origin_is_refused(chart, bad):
    with pytest.raises(helm.HelmValuesError, match="allowedEndpoints"):
        chart.validate_schema({"storage": {"allowedEndpoints": [bad]}})
