"""The Lance store with DuckDB SQL, on real lancedb and duckdb in temporary folders."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from memtape.config import load_config
from memtape.connectors.lance_store import Store
from memtape.errors import UserError
from memtape.pipelines.backfill import run_backfill
from memtape.query import sql
from memtape.schemas import TABLES, conform
from memtape.schemas.records import RawEvent

CET = timezone(timedelta(hours=1))


def _jsonl(path: Path, n: int, bad: int = 0) -> Path:
    lines = [json.dumps({"id": f"m{i}", "text": f"message number {i}", "sender": "ann" if i % 2 else "bob",
                         "time": (datetime(2024, 1, 1, 9, tzinfo=CET) + timedelta(minutes=i)).isoformat(),
                         "conversation": f"c{i % 3}"}) for i in range(n)]
    lines[1:1] = ["{broken json"] * bad
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_table_written_matches_its_schema(tmp_path):
    store = Store(str(tmp_path / "home"))
    for name, schema in TABLES.items():
        assert store.dataset(name).schema.remove_metadata() == schema.remove_metadata(), name
    event = RawEvent("t1", "im", "jsonl", "x1", "hello", datetime(2024, 1, 1, tzinfo=CET))
    store.upsert("raw_events", [event.to_row()])
    landed = store.read("raw_events")
    assert landed.schema.remove_metadata() == TABLES["raw_events"].remove_metadata()
    assert landed.column("tz_offset_minutes").to_pylist() == [60]


def test_conform_rejects_columns_outside_the_schema():
    with pytest.raises(ValueError, match="not in schema"):
        conform("raw_events", [{"tenant": "t", "surprise": 1}])


@pytest.mark.slow
def test_backfill_twice_leaves_every_row_count_unchanged(tmp_path):
    store = Store(str(tmp_path / "home"))
    uri = f"jsonl:{_jsonl(tmp_path / 'chat.jsonl', 50, bad=2)}"
    run_backfill([uri], "t1", store, runner="DirectRunner")
    first = {i.name: i.rows for i in store.info()}
    assert first["raw_events"] == 50 and first["dead_letters"] == 2
    run_backfill([uri], "t1", store, runner="DirectRunner", since=datetime(1970, 1, 1, tzinfo=timezone.utc))
    run_backfill([uri], "t1", store, runner="DirectRunner")
    assert {i.name: i.rows for i in store.info()} == first


@pytest.mark.slow
def test_cursor_makes_the_next_backfill_incremental(tmp_path):
    store = Store(str(tmp_path / "home"))
    path = _jsonl(tmp_path / "chat.jsonl", 10)
    result = run_backfill([f"jsonl:{path}"], "t1", store, runner="DirectRunner")
    assert result.cursors[f"jsonl:{path}"] == datetime(2024, 1, 1, 9, 9, tzinfo=CET)
    _jsonl(path, 15)  # the source grows by five newer messages
    again = run_backfill([f"jsonl:{path}"], "t1", store, runner="DirectRunner")
    assert again.landed["raw_events"] == 6  # the five new ones and the one at the cursor, re-read harmlessly
    assert store.count("raw_events") == 15


@pytest.mark.slow
def test_sql_returns_arrow_and_polars_and_pushes_filters(tmp_path):
    store = Store(str(tmp_path / "home"))
    run_backfill([f"jsonl:{_jsonl(tmp_path / 'c.jsonl', 12)}"], "t1", store, runner="DirectRunner")
    table = sql("SELECT sender, count(*) AS n FROM raw_events WHERE conversation_id = 'c0' GROUP BY 1 ORDER BY 1", store)
    assert isinstance(table, pa.Table)
    assert table.to_pylist() == [{"sender": "ann", "n": 2}, {"sender": "bob", "n": 2}]
    from memtape.query import sql_polars

    assert sql_polars("SELECT count(*) AS n FROM raw_events", store)["n"][0] == 12
    plan = sql("EXPLAIN SELECT text FROM raw_events WHERE sender = 'ann'", store).to_pylist()
    assert "sender" in json.dumps(plan, default=str)


def test_read_only_sql_rejects_writes_and_file_access(tmp_path):
    store = Store(str(tmp_path / "home"))
    for query in ["DELETE FROM raw_events", "COPY raw_events TO 'x.csv'", "ATTACH 'x.db'", "SET threads = 1"]:
        with pytest.raises(UserError, match="only read queries"):
            sql(query, store)
    with pytest.raises(UserError, match="disabled by configuration"):
        sql("SELECT * FROM read_csv('/etc/hostname')", store)


@pytest.mark.slow
def test_cli_sql_json_prints_an_array_of_row_objects(tmp_path):
    home = tmp_path / "home"
    store = Store(str(home))
    run_backfill([f"jsonl:{_jsonl(tmp_path / 'c.jsonl', 7)}"], "t1", store, runner="DirectRunner")
    out = subprocess.run([sys.executable, "-m", "memtape", "sql", "SELECT count(*) AS n FROM raw_events",
                          "--format", "json", "--home", str(home)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [{"n": 7}]


def test_config_file_then_environment_override(tmp_path):
    cfg_file = tmp_path / "memtape.toml"
    cfg_file.write_text('tenant = "acme"\n[store]\nhome = "/data/a"\n[kafka]\ntopic_prefix = "x"\n')
    cfg = load_config(str(cfg_file), env={"MEMTAPE_HOME": "/data/b", "MEMTAPE_KAFKA_GROUP": "g2"})
    assert (cfg.tenant, cfg.store.home, cfg.kafka.topic_prefix, cfg.kafka.group) == ("acme", "/data/b", "x", "g2")
    cfg_file.write_text("[store]\nhomes = 1\n")
    with pytest.raises(ValueError, match="unknown setting 'homes'"):
        load_config(str(cfg_file), env={})


def test_tenant_scoped_sql_sees_only_that_tenant(tmp_path):
    store = Store(str(tmp_path / "home"))
    store.upsert("raw_events", [RawEvent(t, "im", "jsonl", str(i), f"note {i}", None).to_row()
                                for i in range(4) for t in ("alice", "bob")])
    scoped = sql("SELECT a.tenant, count(*) AS n FROM raw_events a JOIN raw_events b USING (event_id) GROUP BY 1",
                 store, tenant="alice")
    assert scoped.to_pylist() == [{"tenant": "alice", "n": 4}]
    with pytest.raises(UserError, match="does not exist"):  # a table named only through dynamic SQL is never registered
        sql("SELECT count(*) FROM query('SELECT * FROM raw_' || 'events')", store, tenant="alice")


def _raw_rows(ids: range) -> list[dict]:
    return [RawEvent("t1", "im", "jsonl", f"s{i}", f"line {i}", datetime(2024, 1, 1, tzinfo=CET)).to_row() for i in ids]


def _land_raw(home: str, rows: list[dict]) -> None:
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from memtape.connectors.beam_io import LanceWriteConfig

    with beam.Pipeline() as p:
        landed = p | beam.Create(rows) | LanceWriteConfig("raw_events", home, batch_rows=7).create_write_transform()
        assert_that(landed, equal_to([("raw_events", len(rows))]))


def test_append_only_sink_lands_each_key_once_in_one_version_per_run(tmp_path):
    home = str(tmp_path / "home")
    store = Store(home)
    first = _raw_rows(range(40))
    _land_raw(home, first + first[:3])  # a key offered twice in one run lands once
    after_first = store.table("raw_events").version
    _land_raw(home, _raw_rows(range(30, 60)))  # 10 keys already stored, 20 new
    stored = store.read("raw_events", columns=["event_id", "text"]).to_pylist()
    assert sorted(r["event_id"] for r in stored) == sorted(r["event_id"] for r in _raw_rows(range(60)))
    assert {r["text"] for r in stored} == {f"line {i}" for i in range(60)}
    assert store.table("raw_events").version == after_first + 1  # every shard's files committed together


def test_append_only_run_that_dies_before_its_commit_leaves_the_table_unchanged(tmp_path, monkeypatch):
    import lance

    home = str(tmp_path / "home")
    store = Store(home)
    _land_raw(home, _raw_rows(range(5)))
    version = store.table("raw_events").version

    def refuse(*_args, **_kwargs):
        raise RuntimeError("killed before the commit")

    monkeypatch.setattr(lance.LanceDataset, "commit", refuse)
    with pytest.raises(Exception, match="killed before the commit"):
        _land_raw(home, _raw_rows(range(50)))
    assert store.table("raw_events").version == version and store.count("raw_events") == 5
    monkeypatch.undo()
    _land_raw(home, _raw_rows(range(50)))  # the rerun lands the rest once
    assert store.count("raw_events") == 50
