"""Property: over random multi-tenant data, recall, service SQL and exports never return another tenant's rows."""
from __future__ import annotations

import tempfile

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memtape.commands._common import write_parquet
from memtape.connectors.lance_store import Store
from memtape.forgetting import OFF
from memtape.query import sql
from memtape.recall import recall
from memtape.service import create_app
from test_recall_api import make_memories

WORDS = ["cat", "budget", "Lisbon", "kitchen", "river", "Clara", "thesis", "boat", "island", "doctor", "piano", "garden"]
tenants = st.lists(st.text(alphabet=st.sampled_from("abz'_- é1"), min_size=1, max_size=8), min_size=2, max_size=3, unique=True)
sentences = st.lists(st.sampled_from(WORDS), min_size=2, max_size=6).map(" ".join)


@pytest.mark.slow
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=tenants, data=st.data())
def test_no_query_returns_another_tenants_rows(names: list[str], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as home:
        store = Store(home)
        owned: dict[str, set[str]] = {}
        for tenant in names:
            texts = data.draw(st.lists(sentences, min_size=1, max_size=4), label=f"texts of {tenant!r}")
            rows = make_memories(store, tenant, [{"text": t, "source_id": f"{tenant}-{i}"} for i, t in enumerate(texts)])
            owned[tenant] = {e for r in rows for e in r["raw_event_ids"]} | {r["memory_id"] for r in rows}
        tokens = {t: f"token-{i:08d}" for i, t in enumerate(names)}
        client = TestClient(create_app(store, tokens))
        for tenant in names:
            query = data.draw(sentences, label="query")
            result = recall(query, tenant, 500, store=store, forgetting=OFF)
            assert result.items
            assert all(i.memory_id in owned[tenant] and set(i.raw_event_ids) <= owned[tenant] for i in result.items)

            for table, key in (("memories", "memory_id"), ("raw_events", "event_id")):
                r = client.post(f"/v1/tenants/{tenant}/sql", json={"query": f"SELECT tenant, {key} FROM {table}"},
                                headers={"Authorization": f"Bearer {tokens[tenant]}"})
                assert r.status_code == 200
                rows = r.json()["rows"]
                assert rows and {row["tenant"] for row in rows} == {tenant}
                assert {row[key] for row in rows} <= owned[tenant]

            export = f"{home}/{abs(hash(tenant))}.parquet"
            write_parquet(sql("SELECT * FROM memories UNION ALL BY NAME SELECT * FROM memories WHERE tenant <> 'x'",
                              store, tenant=tenant), export)
            assert set(pq.read_table(export).column("tenant").to_pylist()) == {tenant}


def test_sql_command_with_tenant_sees_only_that_tenants_rows(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from memtape.cli import cli

    store = Store(str(tmp_path / "store"))
    mine = make_memories(store, "t1", [{"text": "Clara flies in from Lisbon."}])
    make_memories(store, "t2", [{"text": "Zed repaints the kitchen.", "source_id": "z"}])
    query = "SELECT tenant, memory_id, text FROM memories UNION ALL BY NAME SELECT tenant, event_id, text FROM raw_events"
    scoped = CliRunner().invoke(cli, ["sql", query, "--home", store.home, "--tenant", "t1", "--format", "json"])
    assert scoped.exit_code == 0, scoped.output
    rows = json.loads(scoped.stdout)
    assert {r["tenant"] for r in rows} == {"t1"} and len(rows) == 2
    assert {r["memory_id"] for r in rows} - {None} == {mine[0]["memory_id"]}
    everyone = CliRunner().invoke(cli, ["sql", query, "--home", store.home, "--format", "json"])
    assert {r["tenant"] for r in json.loads(everyone.stdout)} == {"t1", "t2"}
