"""Recall on a real Lance store with real MiniLM embeddings: ranking, provenance, packing, filters, forgetting."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from memtape.connectors.lance_store import Store, column_is
from memtape.forgetting import OFF, ForgettingPolicy, forget, reinforce, retention
from memtape.recall import recall
from memtape.recall.pack import count_tokens
from memtape.schemas.records import RawEvent, stable_id

T0 = datetime(2024, 3, 4, 10, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def make_memories(store: Store, tenant: str, specs: list[dict]) -> list[dict]:
    """Land one raw event and one memory per spec (text, who, when, kind), embedded as the pipeline does."""
    from memtape.transforms.encode import embed_texts, memory_text

    raws, rows = [], []
    for i, spec in enumerate(specs):
        when = spec.get("when", T0 + i * DAY)
        event = RawEvent(tenant, spec.get("kind", "im"), spec.get("source", "jsonl"), spec.get("source_id", f"msg-{i}"),
                         spec["text"], when, conversation_id=spec.get("conversation", "chat"), sender=spec.get("who", "Ana"))
        raws.append(event.to_row())
        rows.append({
            "tenant": tenant, "memory_id": stable_id(tenant, "memory", i, spec["text"]), "source_kind": event.source_kind,
            "conversation_id": event.conversation_id, "header": f"who: {event.sender}; when: {when:%Y-%m-%d}",
            "text": spec["text"], "token_count": round(count_tokens(spec["text"])), "raw_event_ids": [event.event_id],
            "participants": [event.sender], "start_time": when, "end_time": when, "strength": spec.get("strength", 1.0),
            "last_recalled": spec.get("last_recalled"), "archived": False, "triple_ids": spec.get("triple_ids", []),
        })
    vectors = embed_texts([memory_text(r) for r in rows])
    for row, vector in zip(rows, vectors):
        row["embedding"] = vector.tolist()
    store.upsert("raw_events", raws)
    store.upsert("memories", rows)
    return rows


CHAT = [
    {"text": "I adopted a grey cat called Biscuit from the shelter last Saturday.", "who": "Ana"},
    {"text": "The quarterly budget review moved to Thursday afternoon.", "who": "Ben"},
    {"text": "My sister Clara is flying in from Lisbon next week.", "who": "Ana"},
    {"text": "We should repaint the kitchen before the summer.", "who": "Ben"},
    {"text": "Biscuit knocked a glass off the table again, such a clumsy kitten.", "who": "Ana"},
    {"text": "Running club meets at the river path every Sunday at 8.", "who": "Ben"},
    {"text": "Clara got a new job as an architect in Porto.", "who": "Ana", "kind": "email"},
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(str(tmp_path_factory.mktemp("recall") / "store"))
    make_memories(store, "t1", CHAT)
    make_memories(store, "t2", [{"text": "Biscuit the cat belongs to tenant two.", "who": "Zed", "source_id": "other"}])
    return store


def test_recall_finds_the_memory_and_cites_its_raw_event(store: Store) -> None:
    result = recall("What is the name of Ana's cat?", "t1", 60, store=store, forgetting=OFF)
    assert any("Biscuit" in item.text for item in result.items)
    top = next(item for item in result.items if "shelter" in item.text)
    assert top.raw_event_ids == [stable_id("t1", "jsonl", "msg-0")]
    assert top.sources == ["jsonl"] and top.source_ids == ["msg-0"]
    assert top.event_time == T0 and top.header.startswith("who: Ana")
    assert all("tenant two" not in item.text for item in result.items)


def test_context_fits_the_budget_and_reads_oldest_first_with_day_headers(store: Store) -> None:
    result = recall("Biscuit", "t1", 50, store=store, forgetting=OFF, order="time")
    assert result.tokens <= 50 and count_tokens(result.context) == result.tokens
    times = [item.event_time for item in result.items]
    assert times == sorted(times) and len(times) >= 2
    assert result.context.splitlines()[0] == "[4 March 2024]"
    assert "Ana: I adopted a grey cat called Biscuit" in result.context


def test_filters_keep_only_the_requested_time_and_source_kind(store: Store) -> None:
    late = recall("Clara", "t1", 500, since=T0 + 3 * DAY, store=store, forgetting=OFF)
    assert late.items and all(item.end_time >= T0 + 3 * DAY for item in late.items)
    early = recall("Clara", "t1", 500, until=T0 + 3 * DAY, store=store, forgetting=OFF)
    assert early.items and all(item.event_time < T0 + 3 * DAY for item in early.items)
    mail = recall("Clara", "t1", 500, source_kind="email", store=store, forgetting=OFF)
    assert [item.text for item in mail.items] == [CHAT[6]["text"]]


def test_redundant_memory_is_dropped(tmp_path) -> None:
    store = Store(str(tmp_path / "s"))
    make_memories(store, "t", [{"text": "The boat trip to the island is on Friday."},
                               {"text": "The boat trip to the island is on Friday!", "source_id": "dup"}])
    result = recall("boat trip island", "t", 200, store=store, forgetting=OFF)
    assert len(result.items) == 1


def test_when_question_prefers_the_memory_that_states_a_time(tmp_path) -> None:
    store = Store(str(tmp_path / "s"))
    make_memories(store, "t", [{"text": "The dentist appointment went fine, no cavities at all."},
                               {"text": "The dentist appointment is next Tuesday at 9."}])
    result = recall("When is the dentist appointment?", "t", 16, store=store, forgetting=OFF)
    assert [item.text for item in result.items] == ["The dentist appointment is next Tuesday at 9."]


def test_latest_question_gets_the_newest_reading_then_three_earlier_newest_first(tmp_path) -> None:
    store = Store(str(tmp_path / "s"))
    weights = [f"My body weight was {kg} kg this morning." for kg in (84, 83, 82, 81, 80, 79)]
    make_memories(store, "t", [*({"text": text} for text in weights),
                               {"text": "My body height was 170 cm this morning.", "when": T0 + 5 * DAY, "source_id": "height"},
                               {"text": "Went hiking with Ben near the lake.", "source_id": "hike"}])
    result = recall("What is my latest body weight?", "t", 1000, store=store, forgetting=OFF)
    assert [item.text for item in result.items] == weights[:1:-1]  # the two oldest, the height and the hike left out


def test_graph_diffusion_reaches_a_memory_linked_through_a_query_entity(tmp_path) -> None:
    store = Store(str(tmp_path / "s"))
    rows = make_memories(store, "t", [
        {"text": "Went hiking with Priya near the lake."},
        *({"text": f"Unrelated note number {i} about groceries and errands.", "conversation": f"c{i}"} for i in range(30)),
        {"text": "She finally finished her thesis on coral reefs.", "conversation": "other"},
    ])
    thesis = rows[-1]
    entity = {"tenant": "t", "entity_id": stable_id("t", "priya"), "canonical_name": "Priya", "entity_type": "PERSON",
              "aliases": ["Priya"], "raw_event_ids": [rows[0]["raw_event_ids"][0], thesis["raw_event_ids"][0]]}
    store.upsert("entities", [entity])
    with_graph = recall("Priya", "t", 40, store=store, forgetting=OFF, min_score=0.0)  # every candidate, not only the best
    without = recall("Priya", "t", 40, store=store, forgetting=OFF, use_graph=False, min_score=0.0)
    assert thesis["memory_id"] in {i.memory_id for i in with_graph.items}
    assert thesis["memory_id"] not in {i.memory_id for i in without.items}


def test_forgetting_decays_ranks_reinforces_and_archives_without_touching_raw_events(tmp_path) -> None:
    store = Store(str(tmp_path / "s"))
    now = T0 + 60 * DAY
    policy = ForgettingPolicy(unit_days=7.0)
    rows = make_memories(store, "t", [
        {"text": "Passport renewal form sent to the consulate.", "when": T0},
        {"text": "Passport photo taken at the pharmacy.", "when": now - DAY},
        {"text": "Blood pressure 128/82 at the clinic.", "when": T0, "kind": "health"},
    ])
    assert retention(1.0, None, T0, now, 7.0) < retention(1.0, None, now - DAY, now, 7.0)
    ranked = recall("passport", "t", 500, store=store, forgetting=policy, reinforce_recalled=False, now=now)
    scores = {i.text.split()[1]: i.score for i in ranked.items}
    assert scores["photo"] > scores["renewal"]

    reinforce(store, "t", [rows[1]["memory_id"]], policy, now)
    stronger = store.read("memories", where=column_is("memory_id", rows[1]["memory_id"])).to_pylist()[0]
    assert stronger["strength"] == 2.0 and stronger["last_recalled"] == now

    archived = forget(store, "t", 0.5, policy, now)
    assert archived == [rows[0]["memory_id"]]  # old but exempt health record stays
    after = recall("passport", "t", 500, store=store, forgetting=policy, now=now)
    recalled = {i.memory_id for i in after.items}
    assert rows[1]["memory_id"] in recalled and rows[0]["memory_id"] not in recalled
    assert store.count("raw_events", column_is("tenant", "t")) == 3


def test_recall_without_tenant_or_budget_is_refused(store: Store) -> None:
    from memtape.errors import UserError

    with pytest.raises(UserError):
        recall("cat", "", 100, store=store)
    with pytest.raises(UserError):
        recall("cat", "t1", 0, store=store)


def test_recall_reinforces_what_it_returned_without_rebuilding_the_graph(tmp_path) -> None:
    from memtape.recall import wait_for_reinforcement
    from memtape.recall.candidates import GRAPHS

    store = Store(str(tmp_path / "s"))
    rows = make_memories(store, "t", [{"text": "Piano lesson moved to Wednesday."}, {"text": "Bought new running shoes."}])
    policy = ForgettingPolicy()
    first = recall("piano lesson", "t", 12, store=store, forgetting=policy, now=T0 + DAY)
    wait_for_reinforcement()
    graph = GRAPHS.get(store, "t")
    assert [i.memory_id for i in first.items] == [rows[0]["memory_id"]]
    written = store.read("memories", where=column_is("tenant", "t")).to_pylist()
    assert {r["memory_id"]: r["strength"] for r in written} == {rows[0]["memory_id"]: 2.0, rows[1]["memory_id"]: 1.0}
    assert graph.strength[rows[0]["memory_id"]][0] == 2.0
    recall("piano lesson", "t", 12, store=store, forgetting=policy, now=T0 + DAY)
    wait_for_reinforcement()
    assert GRAPHS.get(store, "t") is graph


def test_episode_memory_is_recalled_line_by_line_with_each_lines_raw_event(tmp_path) -> None:
    from memtape.transforms.encode import embed_texts, memory_text

    store = Store(str(tmp_path / "s"))
    turns = [("Ana", "Hey Ben, how was the weekend?"), ("Ben", "We drove to Porto and tried the famous francesinha sandwich."),
             ("Ana", "Nice! I stayed home and fixed the leaking sink."), ("Ben", "Next time come along, the river walk is lovely.")]
    events = [RawEvent("t", "im", "jsonl", f"m{i}", text, T0 + i * timedelta(minutes=1), conversation_id="c", sender=who)
              for i, (who, text) in enumerate(turns)]
    store.upsert("raw_events", [e.to_row() for e in events])
    condensed = ["Ben: drove Porto tried famous francesinha sandwich.", "Ana: stayed home fixed leaking sink.",
                 "Ben: Next time come along, river walk lovely."]
    row = {"tenant": "t", "memory_id": "episode-1", "source_kind": "im", "conversation_id": "c", "header": "who: Ana, Ben",
           "text": "\n".join(condensed), "token_count": 20, "raw_event_ids": [e.event_id for e in events],
           "participants": ["Ana", "Ben"], "start_time": T0, "end_time": T0 + 3 * timedelta(minutes=1), "archived": False}
    row["embedding"] = embed_texts([memory_text(row)])[0].tolist()
    store.upsert("memories", [row])
    result = recall("What sandwich did Ben try in Porto?", "t", 30, store=store, forgetting=OFF)
    # The memory's lines were rewritten: recall hands back what Ben wrote, never the rewrite.
    assert [(i.text, i.source_ids) for i in result.items] == [("We drove to Porto and tried the famous francesinha sandwich.", ["m1"])]
    assert result.items[0].raw_event_ids == [events[1].event_id] and result.items[0].event_time == T0 + timedelta(minutes=1)


def test_retriever_returns_cited_documents_and_plugs_into_langchain_when_installed(store: Store) -> None:
    import importlib.util

    from memtape.recall import wait_for_reinforcement
    from memtape.retriever import MemtapeRetriever

    retriever = MemtapeRetriever("t1", budget=40, store=store)
    docs = retriever.retrieve("Clara architect Porto")
    assert docs and any("architect" in text for text, _ in docs)
    assert all(meta["tenant"] == "t1" and meta["raw_event_ids"] and meta["source_ids"] for _, meta in docs)
    if importlib.util.find_spec("langchain_core") is not None:
        found = retriever.as_langchain().invoke("Clara architect Porto")
        assert [d.page_content for d in found] == [text for text, _ in docs]
    wait_for_reinforcement()  # the retriever recalls with forgetting on: let its write land before the store goes


@pytest.mark.slow
def test_recall_is_a_package_whose_api_is_the_recall_function_and_it_loads_no_pipeline_code() -> None:
    import subprocess
    import sys

    code = ("import sys, types, memtape; assert 'lancedb' not in sys.modules; "
            "from memtape.recall import recall; import memtape.recall.candidates; "
            "assert isinstance(memtape.recall, types.ModuleType) and memtape.recall.__path__; "
            "assert recall is memtape.recall.recall and recall.__module__ == 'memtape.recall.api'; "
            "import memtape.recall.working, memtape.recall.lines, memtape.recall.pack, memtape.recall.subjects; "
            "assert not [m for m in sys.modules if m.startswith('memtape.pipelines')]; print('ok')")  # no maintain, no writer
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_recall_only_reads_it_builds_no_index_and_writes_no_version(tmp_path) -> None:
    store = Store(str(tmp_path / "s"))
    make_memories(store, "t", CHAT)
    before = {name: (store.table(name).version, len(store.table(name).list_indices())) for name in ("memories", "raw_events")}
    result = recall("Biscuit the cat", "t", 200, store=store, forgetting=OFF)
    assert any("Biscuit" in item.text for item in result.items)  # the terms rank the memories without a BM25 index
    after = {name: (store.table(name).version, len(store.table(name).list_indices())) for name in ("memories", "raw_events")}
    assert after == before


def test_raw_events_no_memory_holds_yet_are_recalled_as_working_memory(tmp_path) -> None:
    store = Store(str(tmp_path / "s"))
    make_memories(store, "t", CHAT[:2])
    fresh = RawEvent("t", "im", "jsonl", "just-now", "The plumber arrives Thursday at noon to fix the boiler.",
                     T0 + 30 * DAY, conversation_id="house", sender="Ben")
    store.upsert("raw_events", [fresh.to_row()])  # landed, in an episode that has not closed
    result = recall("When does the plumber come to fix the boiler?", "t", 200, store=store, forgetting=OFF)
    item = next(i for i in result.items if i.raw_event_ids == [fresh.event_id])
    assert item.memory_id is None and item.header.endswith("not yet in a memory")
    assert item.text == "The plumber arrives Thursday at noon to fix the boiler." and item.source_ids == ["just-now"]
    older = recall("When does the plumber come to fix the boiler?", "t", 200, store=store, forgetting=OFF,
                   until=T0 + 10 * DAY)
    assert all(fresh.event_id not in i.raw_event_ids for i in older.items)  # the same filters apply
