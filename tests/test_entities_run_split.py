"""Entities and triples do not depend on how the input was split into runs: one backfill, two backfills of the
halves and the streaming job over the same Enron mail land the same ``entities`` and ``triples`` tables."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from memtape.connectors.kafka import publish_records
from memtape.connectors.lance_store import Store
from memtape.connectors.base import read_source
from memtape.pipelines.backfill import run_backfill
from memtape.schemas.records import RawEvent
from test_pipelines_stream import _settled, _stop, _stream

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ENRON = SHARED / "email" / "skilling-j"
# In time order, each its own thread. Kevin Garland, Paul Murphy and Mark Duffey write from their addresses in the
# first half; mails of the second half name them without one ("Kevin Garland will lead EPI", "Paul Murphy has
# scheduled ...", "Mark Duffey has invited you"), so each name must resolve to its address's entity in every split.
FIRST_HALF = ("notes_inbox/99.", "notes_inbox/86.", "inbox/107.")
SECOND_HALF = ("inbox/1161.", "inbox/975.", "inbox/945.")
TENANT = "acme"
ENTITY_COLUMNS = ("entity_id", "canonical_name", "entity_type", "aliases", "identifiers", "raw_event_ids")
TRIPLE_COLUMNS = ("triple_id", "subject", "predicate", "object", "negated", "modality", "subject_entity_id",
                  "object_entity_id", "raw_event_id", "supporting_event_ids", "support_count")

needs_enron = pytest.mark.skipif(not ENRON.exists(), reason="../shared/data absent: Enron skilling-j Maildir needed")


def _maildir(root: Path, names: tuple[str, ...]) -> Path:
    """A Maildir-like folder holding copies of the named messages."""
    root.mkdir(parents=True)
    for name in names:
        shutil.copy(ENRON / name, root / name.replace("/", "_"))
    return root


def _tables(home: Path) -> dict[str, list[tuple]]:
    """The content columns of ``entities`` and ``triples``, sorted (list columns as tuples)."""
    store = Store(str(home), create=False)
    out = {}
    for table, columns in (("entities", ENTITY_COLUMNS), ("triples", TRIPLE_COLUMNS)):
        rows = store.read(table, columns=list(columns)).to_pylist()
        out[table] = sorted(tuple(tuple(v) if isinstance(v, list) else v for v in (r[c] for c in columns)) for r in rows)
    return out


def _backfill(home: Path, *folders: Path) -> dict[str, list[tuple]]:
    for folder in folders:
        run_backfill([f"maildir:{folder}"], TENANT, Store(str(home)))
    return _tables(home)


@pytest.fixture(scope="module")
def one_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple]]:
    root = tmp_path_factory.mktemp("one_run")
    return _backfill(root / "home", _maildir(root / "all", FIRST_HALF + SECOND_HALF))


@pytest.mark.slow
@needs_enron
def test_a_name_seen_first_with_its_address_is_one_entity(one_run):
    for name, address in (("Kevin Garland", "kevin.garland@enron.com"), ("Paul Murphy", "pmurphy@swbanktx.com")):
        named = [e for e in one_run["entities"] if name in e[3]]
        assert len(named) == 1 and address in named[0][4], (name, named)


@pytest.mark.slow
@needs_enron
def test_two_backfills_of_the_halves_land_what_one_backfill_lands(one_run, tmp_path):
    halves = _backfill(tmp_path / "home", _maildir(tmp_path / "first", FIRST_HALF), _maildir(tmp_path / "second", SECOND_HALF))
    assert halves["entities"] == one_run["entities"]
    assert halves["triples"] == one_run["triples"]


@needs_enron
@pytest.mark.slow
def test_the_stream_lands_what_one_backfill_lands(one_run, kafka_broker, tmp_path):
    events: list[RawEvent] = []
    for half in (FIRST_HALF, SECOND_HALF):
        folder = _maildir(tmp_path / f"mail{len(events)}", half)
        events += sorted((r for r in read_source(f"maildir:{folder}", TENANT) if isinstance(r, RawEvent)),
                         key=lambda e: e.event_time)
    assert publish_records(events, kafka_broker, prefix="splittest", partitions=1).events == len(events)
    home = tmp_path / "stream"
    procs = [_stream(home, kafka_broker, "splittest", "g-split", max_seconds=400, idle=3)]
    try:
        assert _settled(home, len(events)), "the stream did not land and derive every message"
    finally:
        _stop(procs)
    got = _tables(home)
    assert got["entities"] == one_run["entities"]
    assert got["triples"] == one_run["triples"]
