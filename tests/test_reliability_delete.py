"""`memtape delete` removes a tenant's data and its bytes from the store directory."""
from __future__ import annotations

import json
from pathlib import Path

from memtape.connectors.lance_store import Store
from memtape.pipelines.backfill import run_backfill
from memtape.pipelines.delete import delete_events, select_events
from memtape.pipelines.maintain import maintain

MARKER = "zebra-quokka-4711"


def _files_containing(root: Path, needle: str) -> list[Path]:
    data = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and data in p.read_bytes()]


def test_deleted_source_id_is_gone_from_disk_and_other_tenants_keep_theirs(tmp_path):
    src = tmp_path / "chat.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"id": "s1", "text": f"the {MARKER} plan is secret", "time": "2024-05-01T10:00:00+02:00", "sender": "ann"},
        {"id": "s2", "text": "public note", "time": "2024-05-01T10:01:00+02:00", "sender": "bob"},
    ]) + "\n")
    home = tmp_path / "home"
    store = Store(str(home))
    for tenant in ("t1", "t2"):
        run_backfill([f"jsonl:{src}"], tenant, store, runner="DirectRunner")
    maintain(store)
    assert _files_containing(home, MARKER), "the marker must be findable on disk before deletion"

    report = delete_events(store, "t1", select_events(store, "t1", source_ids=["s1"]))
    assert report.deleted["raw_events"] == 1
    assert store.read("raw_events", columns=["tenant", "source_id"]).to_pylist() == [
        {"tenant": "t1", "source_id": "s2"}, {"tenant": "t2", "source_id": "s1"}, {"tenant": "t2", "source_id": "s2"}]

    delete_events(store, "t2", select_events(store, "t2", everything=True))
    assert _files_containing(home, MARKER) == []
    assert store.count("raw_events") == 1
