"""Property: a tenant name is a value everywhere, whatever characters it holds.

Quotes, ``'; DROP``, spaces, SQL keywords ("a timestamp b" once lost its
memories to a text replacement), LIKE wildcards, backslashes, non-ASCII and
emoji: through the backfill, recall, ``memtape sql`` and delete, each tenant
sees exactly its own rows, gets memories, and a delete removes exactly its
rows. The full backfill runs for a few names; the cheaper layers take many,
generated with a fixed seed (``derandomize``) so the suite stays deterministic.
"""
from __future__ import annotations

import json
import shlex
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from memtape.cli import cli
from memtape.commands.backfill import dead_letters_command
from memtape.connectors.lance_store import Store, column_is
from memtape.forgetting import OFF
from memtape.pipelines.delete import delete_events, select_events
from memtape.query import sql
from memtape.recall import recall
from memtape.schemas import TABLES
from test_recall_api import DAY, T0, make_memories

NASTY = ["a timestamp b", "O'Brien", "x'; DROP TABLE raw_events; --", "  two  spaces ", "SELECT * FROM memories WHERE true",
         "100% _match_", "Zoë Ωμέγα 東京", "🦊🎉", "back\\slash\\", "'", '"quoted"', "NULL", "tenant = tenant OR 1=1"]
BACKFILLED = ["a timestamp b", "O'Brien'; DROP TABLE raw_events; -- 100%_", "Zoë 🦊 back\\slash"]
CHAT = [("m1", "Ana", "The boiler in the cellar was repaired by Rui on Monday."),
        ("m2", "Ben", "Great, the plumber also checked the radiators in the kitchen."),
        ("m3", "Ana", "Next week we paint the garden fence green.")]
NEIGHBOURS = ["a", "a timestamp", "%", "O"]  # prefixes and wildcards of the names above: a LIKE or a cut would reach them


def _owned(store: Store, tenant: str) -> dict[str, int]:
    return {name: store.count(name, column_is("tenant", tenant)) for name in TABLES}


def _sql_cli(query: str, home: str, tenant: str | None = None) -> list[dict]:
    args = ["sql", query, "--home", home, "--format", "json"] + (["--tenant", tenant] if tenant is not None else [])
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A store where each of ``BACKFILLED`` has backfilled the same small chat with ``memtape backfill``."""
    folder = tmp_path_factory.mktemp("tenant-names")
    source = folder / "chat.jsonl"
    source.write_text("".join(json.dumps({"id": i, "time": (T0 + k * timedelta(minutes=1)).isoformat(), "sender": who,
                                          "conversation": "house", "text": text}) + "\n"
                              for k, (i, who, text) in enumerate(CHAT)), encoding="utf-8")
    home = str(folder / "store")
    for tenant in BACKFILLED:  # the command as a person runs it: the chat is long idle, so its episode closes
        out = CliRunner().invoke(cli, ["backfill", f"jsonl:{source}", "--tenant", tenant, "--home", home])
        assert out.exit_code == 0, out.output
    return Store(home, create=False)


@pytest.mark.slow
def test_a_backfilled_tenant_of_any_name_gets_memories_sees_only_its_rows_and_delete_removes_exactly_them(backfilled: Store) -> None:
    store = backfilled
    events = {t: set(store.read("raw_events", where=column_is("tenant", t), columns=["event_id"]).column("event_id").to_pylist())
              for t in BACKFILLED}
    for tenant in BACKFILLED:
        assert len(events[tenant]) == len(CHAT)
        assert store.count("memories", column_is("tenant", tenant)) >= 1, f"{tenant!r} got no memory"
        result = recall("Who repaired the boiler in the cellar?", tenant, 300, since=T0 - DAY, store=store, forgetting=OFF)
        assert result.items and any("boiler" in item.text for item in result.items)
        assert all(set(item.raw_event_ids) <= events[tenant] for item in result.items)
        rows = _sql_cli("SELECT tenant, event_id AS id FROM raw_events UNION ALL BY NAME SELECT tenant, memory_id AS id FROM memories",
                        store.home, tenant)
        assert {r["tenant"] for r in rows} == {tenant} and {r["id"] for r in rows} >= events[tenant]
        hint = shlex.split(dead_letters_command(tenant, store.home))  # the SQL memtape prints for a person, quoted there
        assert hint[:2] == ["memtape", "sql"] and _sql_cli(hint[2], store.home) == []

    doomed, kept = BACKFILLED[0], BACKFILLED[1:]
    before = {t: _owned(store, t) for t in kept}
    out = CliRunner().invoke(cli, ["delete", "--tenant", doomed, "--all", "--home", store.home])
    assert out.exit_code == 0, out.output
    assert {name: n for name, n in _owned(store, doomed).items() if n} == {"tombstones": 1}
    assert {t: _owned(store, t) for t in kept} == before
    assert all(recall("boiler", t, 300, store=store, forgetting=OFF).items for t in kept)


names = st.text(min_size=1, max_size=12)
_CHEAP = settings(derandomize=True, max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                                              HealthCheck.too_slow])


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One store for every example, holding neighbours whose rows no other tenant may see or lose."""
    store = Store(str(tmp_path_factory.mktemp("tenant-names-shared") / "store"))
    for neighbour in NEIGHBOURS:
        make_memories(store, neighbour, [{"text": "The boiler was repaired on Monday.", "source_id": "n1"}])
    return store


def _examples(test):  # the explicit names, then the generated ones
    for name in NASTY:
        test = example(tenant=name)(test)
    return test


@pytest.mark.slow
@_CHEAP
@given(tenant=names)
@_examples
def test_reads_sql_and_recall_of_any_tenant_name_return_exactly_its_rows(shared: Store, tenant: str) -> None:
    assume(tenant not in NEIGHBOURS)
    rows = make_memories(shared, tenant, [{"text": "The boiler in the cellar was repaired by Rui.", "source_id": "s1"},
                                          {"text": "We paint the garden fence green next week.", "source_id": "s2"}])
    memories = {r["memory_id"] for r in rows}
    events = {e for r in rows for e in r["raw_event_ids"]}
    read = shared.read("memories", where=column_is("tenant", tenant), columns=["memory_id"]).column("memory_id").to_pylist()
    assert set(read) == memories
    got = sql("SELECT tenant, memory_id FROM memories", shared, tenant=tenant).to_pylist()
    assert {r["tenant"] for r in got} == {tenant} and {r["memory_id"] for r in got} == memories
    result = recall("boiler repaired", tenant, 300, since=T0 - DAY, until=T0 + 10 * DAY, store=shared, forgetting=OFF)
    assert result.items and all(i.memory_id in memories and set(i.raw_event_ids) <= events for i in result.items)


@settings(derandomize=True, max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                                  HealthCheck.too_slow])
@pytest.mark.slow
@given(tenant=names)
@example(tenant="a timestamp b")
@example(tenant="x'; DROP TABLE raw_events; --")
@example(tenant="Zoë 🦊 100%_ back\\slash")
def test_delete_of_any_tenant_name_removes_exactly_its_rows(shared: Store, tenant: str) -> None:
    assume(tenant not in NEIGHBOURS)
    make_memories(shared, tenant, [{"text": "The boiler in the cellar was repaired by Rui.", "source_id": "d1"}])
    others = {t: _owned(shared, t) for t in NEIGHBOURS}
    report = delete_events(shared, tenant, select_events(shared, tenant, everything=True), everything=True)
    assert report.deleted["raw_events"] >= 1 and report.deleted["memories"] >= 1
    assert {name: n for name, n in _owned(shared, tenant).items() if n} == {"tombstones": 1}
    assert {t: _owned(shared, t) for t in NEIGHBOURS} == others


def test_a_store_filter_refuses_sql_text(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    with pytest.raises(TypeError, match="pyarrow expression"):
        store.read("raw_events", where="tenant = 'a'")
