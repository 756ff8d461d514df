"""The same backfill on other Beam runners, or in a worker process per core, lands exactly the rows one process lands.

Input: the chat and e-mail samples in the repository (absolute paths, since
runner workers do not share the test's working directory).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from memtape.cli import cli
from memtape.connectors.lance_store import Store
from memtape.pipelines import runner
from memtape.schemas import key_of

REPO = Path(__file__).resolve().parents[1]
SOURCES = [f"jsonl:{REPO / 'samples' / 'jsonl'}", f"eml:{REPO / 'tests' / 'fixtures' / 'connectors' / 'email'}"]
COMPARED = ("raw_events", "utterances", "episodes", "triples", "entities", "memories")
WRITE_TIMES = frozenset({"ingest_time"})  # the clock at landing, the one column two runs cannot share


def backfill(home: Path, *flags: str) -> dict[str, int]:
    """Run ``memtape backfill`` over SOURCES into ``home``; return what it reports as landed."""
    result = CliRunner().invoke(cli, ["backfill", *SOURCES, "--home", str(home), "--format", "json", *flags])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])["landed"]


def keys(home: Path) -> dict[str, list[str]]:
    store = Store(str(home))
    return {t: sorted(store.read(t, columns=[key_of(t)]).column(0).to_pylist()) for t in COMPARED}


def rows(home: Path) -> dict[str, list[dict]]:
    """Every compared table's rows by key, less the landing clock."""
    store = Store(str(home))
    return {t: sorted(({k: v for k, v in r.items() if k not in WRITE_TIMES} for r in store.read(t).to_pylist()),
                      key=lambda r, t=t: r[key_of(t)]) for t in COMPARED}


# Memory vectors are bfloat16 products on a CPU with AMX tiles (transforms.encode): a vector moves by up to 1.6e-3
# with the other texts of its batch, and the batches of one process and of two differ.
VECTOR_TOLERANCE = 2e-3


def same_value(a: object, b: object) -> bool:
    """Equal, floats up to rounding (model arithmetic in other processes adds in another order; vectors up to
    ``VECTOR_TOLERANCE``), id lists as sets."""
    if isinstance(a, float) or (isinstance(a, list) and a and isinstance(a[0], (float, list))):
        atol = 1e-6 if isinstance(a, float) else VECTOR_TOLERANCE
        return b is not None and np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-5, atol=atol)
    if isinstance(a, list) and isinstance(b, list):
        return sorted(map(str, a)) == sorted(map(str, b))
    return a == b


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store after a backfill in one process of the direct runner."""
    home = tmp_path_factory.mktemp("direct")
    backfill(home, "--runner", "DirectRunner", "--workers", "1")
    landed = keys(home)
    assert len(landed["raw_events"]) == 9  # 4 chat lines, 5 e-mails
    assert landed["episodes"] and landed["triples"] and landed["entities"] and landed["memories"]
    return home


@pytest.fixture(scope="module")
def direct(one_process: Path) -> dict[str, list[str]]:
    """Keys of every table after a backfill on the single-process direct runner."""
    return keys(one_process)


@pytest.mark.slow
def test_dask_runner_on_a_two_worker_cluster_lands_the_same_rows_as_the_direct_runner(tmp_path, direct):
    distributed = pytest.importorskip("distributed", reason="dask[distributed] not installed (pip install -e .[dev])")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        landed = backfill(tmp_path, "--runner", "DaskRunner", "--dask-address", cluster.scheduler_address)
    assert keys(tmp_path) == direct
    # Counters travel back from the Dask workers: the report counts what landed, as on the direct runner.
    assert landed["raw_events"] == 9 and landed["memories"] == len(direct["memories"])


@pytest.mark.slow
def test_default_backfill_runs_a_process_per_core_and_lands_the_same_rows_as_one_process(tmp_path, monkeypatch, one_process):
    """By default a large input is derived in one process per core; the sample counts as large here."""
    monkeypatch.setattr(runner, "available_cores", lambda: 2)
    monkeypatch.setattr(runner, "PARALLEL_MIN_EVENTS", 1)
    assert runner.default_workers(1) == 2 and runner.pipeline_options("DirectRunner", 2).get_all_options()["direct_num_workers"] == 2
    backfill(tmp_path)
    expected, got = rows(one_process), rows(tmp_path)
    for table in COMPARED:
        assert [r[key_of(table)] for r in got[table]] == [r[key_of(table)] for r in expected[table]], table
        for want, have in zip(expected[table], got[table]):
            assert want.keys() == have.keys()
            assert all(same_value(want[k], have[k]) for k in want), (table, [k for k in want if not same_value(want[k], have[k])])


def test_each_worker_process_gives_torch_its_share_of_the_cores_and_one_process_leaves_torch_alone(monkeypatch):
    monkeypatch.setattr(runner, "available_cores", lambda: 8)
    assert runner.model_threads(runner.pipeline_options("DirectRunner", 4)) == 2
    assert runner.model_threads(runner.pipeline_options("DirectRunner", 16)) == 1  # more processes than cores: one each
    assert runner.model_threads(runner.pipeline_options("DirectRunner", 1)) is None
    assert runner.model_threads(runner.pipeline_options("DaskRunner", 4)) is None  # Dask's workers are not this machine's
