"""The same backfill on other Beam runners lands exactly the rows the direct runner lands.

Input: the chat and e-mail samples in the repository (absolute paths, since
runner workers do not share the test's working directory).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from memtape.cli import cli
from memtape.connectors.lance_store import Store
from memtape.schemas import key_of

REPO = Path(__file__).resolve().parents[1]
SOURCES = [f"jsonl:{REPO / 'samples' / 'jsonl'}", f"eml:{REPO / 'tests' / 'fixtures' / 'connectors' / 'email'}"]
COMPARED = ("raw_events", "utterances", "episodes", "triples", "entities", "memories")


def backfill(home: Path, *flags: str) -> dict[str, int]:
    """Run ``memtape backfill`` over SOURCES into ``home``; return what it reports as landed."""
    result = CliRunner().invoke(cli, ["backfill", *SOURCES, "--home", str(home), "--format", "json", *flags])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])["landed"]


def keys(home: Path) -> dict[str, list[str]]:
    store = Store(str(home))
    return {t: sorted(store.read(t, columns=[key_of(t)]).column(0).to_pylist()) for t in COMPARED}


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Keys of every table after a backfill on the single-process direct runner."""
    home = tmp_path_factory.mktemp("direct")
    backfill(home, "--runner", "DirectRunner")
    landed = keys(home)
    assert len(landed["raw_events"]) == 9  # 4 chat lines, 5 e-mails
    assert landed["episodes"] and landed["triples"] and landed["entities"] and landed["memories"]
    return landed


def test_dask_runner_on_a_two_worker_cluster_lands_the_same_rows_as_the_direct_runner(tmp_path, direct):
    distributed = pytest.importorskip("distributed", reason="dask[distributed] not installed (pip install -e .[dev])")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        landed = backfill(tmp_path, "--runner", "DaskRunner", "--dask-address", cluster.scheduler_address)
    assert keys(tmp_path) == direct
    # Counters travel back from the Dask workers: the report counts what landed, as on the direct runner.
    assert landed["raw_events"] == 9 and landed["memories"] == len(direct["memories"])


def test_multi_process_direct_runner_lands_the_same_rows_as_one_process(tmp_path, direct):
    backfill(tmp_path, "--runner", "DirectRunner", "--workers", "2")
    assert keys(tmp_path) == direct
