"""A store on object storage: backfill into s3://bucket/prefix lands what a local home lands, and SQL reads it.

The S3 API is moto's server on 127.0.0.1, started by the test; memtape reaches
it the way a user configures MinIO or any S3-compatible endpoint: the
endpoint through ``MEMTAPE_STORE_STORAGE_OPTIONS_*`` and credentials through
the standard ``AWS_*`` variables.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memtape.connectors.lance_store import Store
from memtape.pipelines.backfill import run_backfill
from memtape.schemas import key_of

moto_server = pytest.importorskip("moto.server", reason="moto[server] not installed (pip install -e .[dev])")
boto3 = pytest.importorskip("boto3", reason="boto3 not installed (pip install -e .[dev])")

REPO = Path(__file__).resolve().parents[1]
SOURCES = [f"jsonl:{REPO / 'samples' / 'jsonl'}", f"eml:{REPO / 'tests' / 'fixtures' / 'connectors' / 'email'}"]
COMPARED = ("raw_events", "utterances", "episodes", "triples", "entities", "memories")
BUCKET = "memtape-test"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}


@pytest.fixture
def s3_endpoint() -> str:
    """An empty bucket on a moto S3 server bound to loopback; yields its endpoint URL."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def memtape(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "memtape", *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def keys(store: Store) -> dict[str, list[str]]:
    return {t: sorted(store.read(t, columns=[key_of(t)]).column(0).to_pylist()) for t in COMPARED}


@pytest.mark.slow
def test_backfill_into_s3_lands_the_same_rows_as_a_local_home_and_sql_reads_them(tmp_path, s3_endpoint):
    home = f"s3://{BUCKET}/alice"
    env = {**os.environ, **CREDENTIALS, "MEMTAPE_HOME": home, "MEMTAPE_CONFIG": str(tmp_path / "absent.toml"),
           "MEMTAPE_STORE_STORAGE_OPTIONS_AWS_ENDPOINT": s3_endpoint,
           "MEMTAPE_STORE_STORAGE_OPTIONS_ALLOW_HTTP": "true",
           "AWS_EC2_METADATA_DISABLED": "true", "HF_HUB_OFFLINE": "1"}
    memtape(env, "backfill", *SOURCES, "--runner", "DirectRunner")

    local = Store(str(tmp_path / "local"))
    run_backfill(SOURCES, "default", local, runner="DirectRunner")
    on_s3 = Store(home, {"aws_endpoint": s3_endpoint, "allow_http": "true", "aws_access_key_id": "test",
                         "aws_secret_access_key": "test", "aws_region": "us-east-1"})
    expected = keys(local)
    assert len(expected["raw_events"]) == 9 and expected["memories"]
    assert keys(on_s3) == expected
    objects = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                           region_name="us-east-1").list_objects_v2(Bucket=BUCKET, Prefix="alice/raw_events.lance/")
    assert objects["KeyCount"] > 0  # the rows are in the bucket, not in some local fallback folder

    rows = json.loads(memtape(env, "sql", "SELECT count(*) AS n FROM raw_events", "--format", "json"))
    assert rows == [{"n": 9}]
