"""Compression turns episodes into budgeted, traceable memories; repeated facts merge; the eval meets its targets."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from click.testing import CliRunner

from memtape.evals.compression import command as eval_command
from memtape.schemas import conform
from memtape.schemas.records import stable_id
from memtape.transforms.compress import EPISODES_TAG, CompressEpisodes, build_memory, merge_triples
from memtape.transforms.tokens import count_tokens

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LOCOMO = SHARED / "locomo" / "locomo_dev.json"
ENRON = SHARED / "email" / "skilling-j"
T0 = datetime(2023, 5, 8, 13, 56, tzinfo=timezone.utc)

TURNS = [
    ("Melanie", "Hey Caroline! I ran a charity race for mental health last Saturday, it was really rewarding."),
    ("Caroline", "Wow, that's awesome, Mel! So proud of you!"),
    ("Melanie", "Thanks! Next month we're going camping at Lake Tahoe with the kids. I didn't book the site yet."),
    ("Caroline", "Sounds great! I'm researching adoption agencies that support LGBTQ+ parents."),
]


def _bundle() -> dict:
    units = [{"tenant": "t1", "event_id": f"e{i}", "source_kind": "im", "conversation_id": "c1", "sender": who,
              "event_time": T0 + timedelta(minutes=i), "text": text, "attrs": None, "stripped": {}, "duplicate_of": None}
             for i, (who, text) in enumerate(TURNS)]
    dropped = [{"tenant": "t1", "event_id": "e9", "reason": "short_ack", "duplicate_of": None}]
    episode = {"tenant": "t1", "episode_id": "ep1", "conversation_id": "c1", "source_kind": "im",
               "member_ids": ["e0", "e1", "e2", "e3", "e9"], "start_time": T0, "end_time": T0 + timedelta(minutes=9)}
    triples = [{"tenant": "t1", "triple_id": "tr1", "subject": "Melanie", "predicate": "ran", "object": "charity race",
                "negated": False, "raw_event_id": "e0"}]
    return {"episode": episode, "units": units, "triples": triples, "dropped": dropped}


def test_memory_row_fits_the_schema_and_keeps_full_provenance():
    memory, dropped_summary = build_memory(_bundle())
    conform("memories", [memory])
    assert memory["memory_id"] == stable_id("t1", "ep1")
    assert memory["raw_event_ids"] == ["e0", "e1", "e2", "e3", "e9"]
    assert memory["triple_ids"] == ["tr1"]
    assert memory["token_count"] == count_tokens(memory["text"])
    assert memory["header"] == ("who: Melanie, Caroline; when: 2023-05-08 13:56 to 2023-05-08 14:05 UTC; where: im c1;"
                                " dropped: 1 short acknowledgement")
    assert dropped_summary == "1 short acknowledgement"


def test_memory_keeps_facts_and_drops_pleasantries_under_the_budget():
    memory, _ = build_memory(_bundle(), budget_ratio=0.8)
    raw = sum(count_tokens(t) for _, t in TURNS)
    assert memory["token_count"] <= 0.8 * raw + 8
    for fact in ("charity race", "mental health", "Lake Tahoe", "I didn't book the site yet", "adoption agencies"):
        assert fact in memory["text"]
    assert "proud" not in memory["text"]
    assert memory["text"].startswith("Melanie: ")


def test_loose_budget_keeps_sentences_verbatim():
    memory, _ = build_memory(_bundle(), budget_ratio=1.0)
    assert "Melanie: Hey Caroline! I ran a charity race for mental health last Saturday, it was really rewarding." in memory["text"]


def test_memory_selects_whole_sentences_and_never_rewrites_them():
    bundle = _bundle()
    bundle["units"][0]["text"] = ("I didn't pay $5.50 for the self-care kit at Walgreens on May 3rd, it was really 20% off! "
                                  "The weather was fine. My blood pressure read 128/82 mm[Hg] (LOINC 85354-9) at the pharmacy.")
    memory, _ = build_memory(bundle, budget_ratio=0.6)
    first = memory["text"].splitlines()[0].removeprefix("Melanie: ")
    pieces = first.split(" \u2026 ")
    sentences = bundle["units"][0]["text"]
    assert all(piece in sentences for piece in pieces), pieces
    assert "I didn't pay $5.50 for the self-care kit at Walgreens on May 3rd, it was really 20% off!" in first
    assert "128/82 mm[Hg] (LOINC 85354-9)" in first
    assert all(line.count("Melanie:") == 1 for line in memory["text"].splitlines() if "Melanie:" in line)  # once per message


def test_repeated_fact_raises_support_instead_of_adding_copies():
    def triple(i: int, day: int, obj: str = "violin") -> dict:
        return {"tenant": "t1", "triple_id": f"t{i}", "subject": "Melanie", "predicate": "plays", "object": obj, "negated": False,
                "raw_event_id": f"e{i}", "event_time": T0 + timedelta(days=day), "confidence": 0.5 + i / 10}
    merged = merge_triples([triple(2, 9, "Violin "), triple(1, 1), triple(3, 30), triple(4, 2, "piano")])
    by_object = {m["object"].strip().casefold(): m for m in merged}
    assert len(merged) == 2
    assert by_object["violin"]["triple_id"] == "t1"
    assert by_object["violin"]["support_count"] == 3
    assert by_object["violin"]["last_seen"] == T0 + timedelta(days=30)
    assert by_object["piano"]["support_count"] == 1


def test_compress_episodes_transform_fills_the_episode_dropped_summary():
    with TestPipeline() as p:
        out = p | beam.Create([_bundle()]) | CompressEpisodes()
        assert_that(out.memories | beam.Map(lambda m: m["memory_id"]), equal_to([stable_id("t1", "ep1")]), label="memories")
        assert_that(out[EPISODES_TAG] | beam.Map(lambda e: (e["episode_id"], e["dropped_ids"], e["dropped_summary"])),
                    equal_to([("ep1", ["e9"], "1 short acknowledgement")]), label="episodes")


def _eval(data: Path) -> dict:
    result = CliRunner().invoke(eval_command, ["--data", str(data), "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


@pytest.mark.skipif(not LOCOMO.exists(), reason="../shared/data absent: LoCoMo dev needed")
def test_locomo_memories_are_verbatim_and_keep_the_evidence():
    scores = _eval(LOCOMO)
    assert {"raw_tokens", "memory_tokens", "ratio", "verbatim_share", "near_dup_pairs", "evidence_survival"} <= scores.keys()
    assert scores["verbatim_share"] == 1.0
    assert scores["evidence_survival"] >= 0.9
    assert scores["ratio"] <= 0.95


@pytest.mark.skipif(not ENRON.exists(), reason="../shared/data absent: Enron skilling-j Maildir needed")
def test_enron_memories_are_verbatim_and_leave_quotes_signatures_and_repeats_out():
    scores = _eval(ENRON)
    assert scores["verbatim_share"] >= 0.98
    assert scores["ratio"] <= 0.7
    assert scores["near_dup_pairs"] > 0


def test_eval_rejects_a_missing_path_in_one_line():
    result = CliRunner().invoke(eval_command, ["--data", "/nonexistent/file.json"])
    assert result.exit_code != 0
    assert "no such LoCoMo" in str(result.exception)
