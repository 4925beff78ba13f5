"""`cpt run` with s3:// storage and an endpoint: checkpoints, results and the report go to a real S3 server."""

import json
import os
import subprocess
import sys

import boto3
import pytest

from .conftest import write_spec

pytestmark = pytest.mark.slow


def test_run_with_s3_storage(workspace, s3_endpoint):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="cpt-runs")
    spec = write_spec(workspace, name="ons3", storage="s3://cpt-runs/ons3", method="sft", max_steps=2,
                      **{"{uri: s3://cpt-runs/ons3}": f"{{uri: s3://cpt-runs/ons3, endpoint: '{s3_endpoint}', "
                                                      "pathStyle: true}"})
    proc = subprocess.run([sys.executable, "-m", "cpt_operator.cli", "run", spec.name, "--metrics-port", "-1"],
                          cwd=workspace, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="cpt-runs", Prefix="ons3/")["Contents"]}
    for index, name in ((0, "base"), (1, "reverse"), (2, "add")):
        assert f"ons3/tasks/{index}-{name}/manifest.json" in keys
    assert any(k.startswith("ons3/tasks/2-add/checkpoint/") and k.endswith(".safetensors") for k in keys)
    report = json.loads(s3.get_object(Bucket="cpt-runs", Key="ons3/report.json")["Body"].read())
    assert report["phase"] == "Succeeded" and len(report["matrix"]) == 3
    assert "ons3/accuracy.png" in keys
    assert "testing-secret" not in proc.stdout + proc.stderr
