"""Entity resolution carries its mapping between runs, bounded; tables declare how they take a stored key once."""
from __future__ import annotations

import functools
from datetime import datetime, timezone

import pytest

from memtape.connectors.lance_store import Store
from memtape.pipelines.merging import MERGES, fold_of, merge_entity
from memtape.schemas import TABLES, Disposition, disposition
from memtape.schemas.records import ConversationKey
from memtape.transforms import entities
from memtape.transforms.entities import EntityResolver, MentionLog, resolve

UNITS = [{"tenant": "t", "event_id": f"e{i}", "event_time": None} for i in range(4)]


def _calls(resolver):
    """Mail from Jeff with his address, then his name alone, then a code and a bare address."""
    return [
        resolver.person("Jeff Skilling", "jeff.skilling@enron.com", "e0"),
        resolver.mention("Jeff Skilling", None, "e1"),
        resolver.concept("http://loinc.org", "8302-2", "Body Height", "Observation", "e2"),
        resolver.speaker("sherri.sera@enron.com", "e3"),
    ]


def test_state_carried_to_a_second_resolver_gives_the_ids_and_rows_of_one():
    one = EntityResolver("t")
    ids = _calls(one)
    first = EntityResolver("t")
    split = _calls(first)[:2]
    second = EntityResolver("t", first.state_json())
    split += [second.concept("http://loinc.org", "8302-2", "Body Height", "Observation", "e2"),
              second.speaker("sherri.sera@enron.com", "e3")]
    assert split == ids and ids[0] == ids[1]  # the bare name is the address's entity in both
    folded: dict[str, dict] = {}
    for row in first.rows() + second.rows():
        folded[row["entity_id"]] = merge_entity(folded[row["entity_id"]], row) if row["entity_id"] in folded else row
    assert sorted(folded.values(), key=lambda r: r["entity_id"]) == sorted(one.rows(), key=lambda r: r["entity_id"])


def test_mentions_are_replayed_in_event_order_whatever_order_the_episodes_come_in():
    """An episode extracted first but written later must not claim a name before the mail that gave its address."""
    early = MentionLog([{"event_id": "e0", "event_time": None}])
    early.person("Jeff Skilling", "jeff.skilling@enron.com", "e0")
    late = MentionLog([{"event_id": "e9", "event_time": None}])
    ref = late.mention("Jeff Skilling", "PERSON", "e9")
    pending = {"tenant": "t", "raw_event_id": "e9", "subject_entity_id": ref, "object_entity_id": None}
    episodes = [{"tenant": "t", "conversation_id": None, "episode_id": ep, "mentions": log.mentions, "triples": triples}
                for ep, log, triples in (("b", late, [pending]), ("a", early, []))]
    resolver = EntityResolver("t")
    [triple] = resolve(resolver, episodes)
    assert triple["subject_entity_id"] == resolver.entity_id("email:jeff.skilling@enron.com")


def test_carried_state_is_bounded_and_a_forgotten_entity_keeps_its_id(monkeypatch):
    monkeypatch.setattr(entities, "MAX_CARRIED_ENTITIES", 2)
    monkeypatch.setattr(entities, "MAX_CARRIED_ALIASES", 2)
    monkeypatch.setattr(entities, "MAX_CARRIED_IDENTIFIERS", 2)
    resolver = EntityResolver("t")
    jeff = resolver.person("Jeff Skilling", "jeff.skilling@enron.com", "e0")
    for n in range(3):
        resolver.person(None, f"someone{n}@enron.com", f"e{n + 1}")
    later = EntityResolver("t", resolver.state_json())
    state = later.state_json()
    assert "jeff" not in state and "someone2@enron.com" in state
    assert later.person(None, "jeff.skilling@enron.com", "e9") == jeff  # the address is the key: same id
    assert later.mention("Jeff Skilling", None, "e9") is None  # the name's link was forgotten with it


def test_every_table_declares_a_disposition_and_only_merge_tables_fold():
    assert {t: disposition(t) for t in ("raw_events", "dead_letters", "triples", "episodes")} == {
        "raw_events": Disposition.INSERT, "dead_letters": Disposition.INSERT, "triples": Disposition.MERGE,
        "episodes": Disposition.REPLACE}
    assert {t for t in TABLES if disposition(t) is Disposition.MERGE} == set(MERGES)
    assert [t for t in TABLES if fold_of(t) is not None] == [t for t in TABLES if t in MERGES]


def test_the_store_keeps_an_insert_only_row_and_replaces_a_recomputed_one(tmp_path):
    store = Store(str(tmp_path))
    cursor = functools.partial(dict, tenant="t", cursor_id="c1", source_uri="mbox:/a", last_event_time=None)
    store.upsert("cursors", [cursor(updated_time=_ts(1))])
    store.upsert("cursors", [cursor(updated_time=_ts(2))])
    assert store.read("cursors").column("updated_time").to_pylist() == [_ts(2)]
    dead = functools.partial(dict, tenant="t", dead_letter_id="d1", stage="read", created_time=_ts(1))
    store.upsert("dead_letters", [dead(error="first")])
    store.upsert("dead_letters", [dead(error="second")])
    assert store.read("dead_letters").column("error").to_pylist() == ["first"]


def _ts(day: int) -> datetime:
    return datetime(2024, 1, day, tzinfo=timezone.utc)


@pytest.mark.parametrize("tenant,conversation", [("acme", "C024BE91L"), ("a timestamp b", ""), ("O'Brien", "re: \x1f odd")])
def test_conversation_key_decodes_what_it_encodes(tenant, conversation):
    key = ConversationKey(tenant, conversation)
    assert ConversationKey.decode(key.encode()) == key
    assert ConversationKey.of({"tenant": tenant, "conversation_id": conversation or None}) == key
