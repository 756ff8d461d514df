"""ExtractTriples then ResolveEntities over episode bundles: parsed chat text and FHIR attrs come out as triples with
entity ids, and entities."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from memtape.schemas import conform
from memtape.transforms.entities import ENTITIES, ResolveEntities
from memtape.transforms.triples import ExtractTriples

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)


def _bundle() -> dict:
    units = [
        {"event_id": "u1", "tenant": "t", "sender": "Dana", "event_time": T0, "text": "I moved the meeting to Friday.",
         "source_kind": "im", "attrs": None},
        {"event_id": "u2", "tenant": "t", "sender": "Eve", "event_time": T0, "text": "The patient does not take aspirin.",
         "source_kind": "im", "attrs": None},
        {
            "event_id": "u3", "tenant": "t", "sender": None, "event_time": T0, "text": "Condition: Appendicitis",
            "source_kind": "health",
            "attrs": json.dumps({"resource_type": "Condition", "resource_id": "c1", "patient_id": "p1", "patient_name": "Ann Lee",
                                 "codes": [{"system": "http://snomed.info/sct", "code": "74400008", "display": "Appendicitis"}],
                                 "onset": "1953-11-29T01:23:28+00:00"}),
        },
    ]
    return {"episode": {"tenant": "t", "episode_id": "ep1"}, "units": units}


def test_extract_triples_emits_tagged_rows_that_conform():
    with TestPipeline() as p:
        extracted = p | beam.Create([_bundle()]) | ExtractTriples()
        out = {"episodes": extracted, "state": p | "NoState" >> beam.Create([])} | ResolveEntities()

        def check_triples(rows):
            conform("triples", rows)
            got = {(r["subject"], r["predicate"], r["object"], r["negated"]) for r in rows}
            assert {("Dana", "move", "the meeting", False), ("Dana", "move to", "Friday", False),
                    ("The patient", "take", "aspirin", True), ("Ann Lee", "has_condition", "Appendicitis", False)} <= got, got
            assert all(r["episode_id"] == "ep1" for r in rows)
            dana = next(r for r in rows if r["subject"] == "Dana")
            assert isinstance(dana["subject_entity_id"], str) and len(dana["subject_entity_id"]) == 32

        def check_entities(rows):
            conform("entities", rows)
            names = {r["canonical_name"] for r in rows}
            assert {"Dana", "Eve", "Ann Lee", "Appendicitis"} <= names, names

        assert_that(out["triples"], check_triples, label="triples")
        assert_that(out[ENTITIES], check_entities, label="entities")


def test_only_the_named_spans_are_parsed_and_offsets_stay_in_the_unit_text():
    text = "Bob sent the report. Dana moved the meeting to Friday.\nEve sold the old car. Bob signed the lease."
    kept = (text.index("Dana"), text.index(" Bob signed"))
    unit = {"event_id": "u1", "tenant": "t", "sender": "Dana", "event_time": T0, "text": text, "source_kind": "im", "attrs": None}
    bundle = {"episode": {"tenant": "t", "episode_id": "ep1"}, "units": [unit], "spans": [[kept]]}
    with TestPipeline() as p:
        out = p | beam.Create([bundle]) | ExtractTriples() | beam.FlatMap(lambda extracted: extracted["triples"])

        def check(rows):
            got = {(r["subject"], r["predicate"], r["object"]): text[r["char_start"]:r["char_end"]] for r in rows}
            assert got[("Dana", "move", "the meeting")] == "Dana moved the meeting"
            assert got[("Eve", "sell", "the old car")] == "Eve sold the old car"
            assert all(kept[0] <= r["char_start"] and r["char_end"] <= kept[1] for r in rows)  # nothing of Bob's sentences

        assert_that(out, check)
